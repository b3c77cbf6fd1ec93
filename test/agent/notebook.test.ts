import assert from "node:assert/strict";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import {
  executeNotebook,
  type NotebookEvent,
  type NotebookExecution,
  type NotebookOutcome,
} from "../../src/agent/notebook/executor.ts";
import type { JsonValue } from "../../src/domain/json.ts";

// Real kernels: needs python3 with ipykernel, nbclient and nbformat.
const PYTHON = process.env.HANGAR_PYTHON ?? "/usr/bin/python3";

interface CellSpec {
  source: string;
  type?: "code" | "markdown";
  tags?: string[];
}

interface PapermillCellMeta {
  status: "pending" | "running" | "completed" | "failed";
  exception: boolean;
  start_time: string | null;
  end_time: string | null;
  duration: number | null;
}

interface ExecutedCell {
  cell_type: string;
  source: string | string[];
  execution_count?: number | null;
  metadata: { tags?: string[]; papermill?: PapermillCellMeta };
}

interface ExecutedNotebook {
  cells: ExecutedCell[];
  metadata: {
    papermill: {
      parameters: Record<string, JsonValue>;
      start_time: string;
      end_time: string;
      duration: number;
      exception: boolean;
    };
  };
}

function notebook(cells: CellSpec[]): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
    cells: cells.map(({ source, type = "code", tags }, i) => ({
      id: `cell-${i}`,
      cell_type: type,
      metadata: tags ? { tags } : {},
      source,
      ...(type === "code" ? { outputs: [], execution_count: null } : {}),
    })),
  });
}

const source = (cell: ExecutedCell) => (Array.isArray(cell.source) ? cell.source.join("") : cell.source);
const tagged = (cell: ExecutedCell, tag: string) => cell.metadata.tags?.includes(tag) ?? false;

interface Run {
  outcome: NotebookOutcome;
  events: { at: number; event: NotebookEvent }[];
  outputDir: string;
  outputNotebookPath: string;
  executed(): Promise<ExecutedNotebook>;
}

async function run(
  t: TestContext,
  notebookText: string,
  options: Partial<NotebookExecution> = {},
): Promise<Run> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-notebook-test-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const notebookPath = join(dir, "input.ipynb");
  const outputDir = join(dir, "output");
  const outputNotebookPath = join(dir, "executed.ipynb");
  await writeFile(notebookPath, notebookText);
  await mkdir(outputDir);
  const events: Run["events"] = [];
  const outcome = await executeNotebook({
    notebookPath,
    outputNotebookPath,
    parameters: {},
    workDir: dir,
    env: { HANGAR_OUTPUT_DIR: outputDir },
    pythonPath: PYTHON,
    onEvent: (event) => events.push({ at: performance.now(), event }),
    ...options,
  });
  return {
    outcome,
    events,
    outputDir,
    outputNotebookPath,
    executed: async () => JSON.parse(await readFile(outputNotebookPath, "utf8")) as ExecutedNotebook,
  };
}

function assertAllCompleted(nb: ExecutedNotebook): void {
  for (const cell of nb.cells) {
    const meta = cell.metadata.papermill;
    assert.ok(meta, `cell ${source(cell)} has papermill metadata`);
    assert.equal(meta.status, "completed");
    assert.equal(meta.exception, false);
    assert.equal(typeof meta.duration, "number");
    assert.ok(meta.start_time && !Number.isNaN(Date.parse(meta.start_time)));
    assert.ok(meta.end_time && !Number.isNaN(Date.parse(meta.end_time)));
  }
  assert.equal(nb.metadata.papermill.exception, false);
  assert.equal(typeof nb.metadata.papermill.duration, "number");
}

describe("executeNotebook", { concurrency: 4 }, () => {
  it("injects parameters after the parameters cell and records papermill metadata", async (t) => {
    const parameters = {
      x: 21,
      label: 'it\'s "quoted"\n',
      flag: true,
      missing: null,
      nested: { a: [1, 2.5] },
    };
    const r = await run(
      t,
      notebook([
        { type: "markdown", source: "# Doubler" },
        { source: "x = 1\nlabel = ''", tags: ["parameters"] },
        {
          source: [
            "import os",
            "with open(os.path.join(os.environ['HANGAR_OUTPUT_DIR'], 'result.txt'), 'w') as f:",
            "    f.write(str(x * 2))",
            "assert label == 'it\\'s \"quoted\"\\n' and flag is True and missing is None",
            "assert nested == {'a': [1, 2.5]}",
          ].join("\n"),
        },
      ]),
      { parameters },
    );
    assert.deepEqual(r.outcome, { status: "succeeded" });
    assert.equal(await readFile(join(r.outputDir, "result.txt"), "utf8"), "42");

    const nb = await r.executed();
    assert.equal(nb.cells.length, 4);
    const injected = nb.cells[2]!;
    assert.ok(tagged(nb.cells[1]!, "parameters"));
    assert.ok(tagged(injected, "injected-parameters"));
    assert.ok(source(injected).startsWith("# Parameters\nx = 21\n"));
    assert.deepEqual(nb.metadata.papermill.parameters, parameters);
    assertAllCompleted(nb);

    const names = r.events.map(({ event }) => event.event);
    assert.equal(names[0], "start");
    assert.equal(names.at(-1), "end");
    assert.equal(names.filter((name) => name === "cell_start").length, 4);
    assert.equal(names.filter((name) => name === "cell_end").length, 4);
  });

  it("replaces an earlier injected-parameters cell", async (t) => {
    const r = await run(
      t,
      notebook([
        { source: "# Parameters\nx = 1\n", tags: ["injected-parameters"] },
        { source: "x = 0", tags: ["parameters"] },
        { source: "assert x == 5, x" },
      ]),
      { parameters: { x: 5 } },
    );
    assert.deepEqual(r.outcome, { status: "succeeded" });
    const nb = await r.executed();
    assert.deepEqual(
      nb.cells.map((cell) => cell.metadata.tags ?? []),
      [["parameters"], ["injected-parameters"], []],
    );
    assert.equal(source(nb.cells[1]!), "# Parameters\nx = 5\n");
  });

  it("injects at the top with a warning when there is no parameters cell", async (t) => {
    const r = await run(t, notebook([{ source: "assert x == 3" }]), { parameters: { x: 3 } });
    assert.deepEqual(r.outcome, { status: "succeeded" });
    const nb = await r.executed();
    assert.ok(tagged(nb.cells[0]!, "injected-parameters"));
    assert.ok(r.events.some(({ event }) => event.event === "warning"));
    assertAllCompleted(nb);
  });

  it("stops at a failing cell and saves the notebook with papermill's error cells", async (t) => {
    const r = await run(
      t,
      notebook([
        { source: "a = 1" },
        { type: "markdown", source: "text" },
        { source: "raise ValueError('bad value')" },
        { source: "print('never')" },
      ]),
    );
    assert.equal(r.outcome.status, "failed");
    assert.ok(r.outcome.status === "failed");
    const { error } = r.outcome;
    assert.equal(error.code, "cell_error");
    assert.equal(error.cell_index, 2);
    assert.equal(error.execution_count, 2);
    assert.equal(error.ename, "ValueError");
    assert.equal(error.evalue, "bad value");
    assert.equal(error.message, "Cell 2 (In [2]) raised ValueError: bad value");
    assert.ok(error.traceback && error.traceback.length > 0);

    const nb = await r.executed();
    // Banner on top, anchor right before the failed cell.
    assert.equal(nb.cells.length, 6);
    assert.ok(tagged(nb.cells[0]!, "papermill-error-cell-tag"));
    assert.match(source(nb.cells[0]!), /An Exception was encountered at .*In \[2\]/);
    assert.ok(tagged(nb.cells[3]!, "papermill-error-cell-tag"));
    assert.match(source(nb.cells[3]!), /id="papermill-error-cell"/);
    assert.equal(nb.cells[4]!.metadata.papermill?.status, "failed");
    assert.equal(nb.cells[4]!.metadata.papermill?.exception, true);
    assert.equal(nb.cells[5]!.metadata.papermill?.status, "pending");
    assert.equal(nb.cells[5]!.execution_count, null);
    assert.equal(nb.metadata.papermill.exception, true);
  });

  it("forwards stream output while the cell is still running", async (t) => {
    const r = await run(
      t,
      notebook([{ source: "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')" }]),
    );
    assert.deepEqual(r.outcome, { status: "succeeded" });
    const firstStream = r.events.find(({ event }) => event.event === "stream");
    const cellEnd = r.events.find(({ event }) => event.event === "cell_end");
    assert.ok(firstStream && cellEnd);
    assert.deepEqual(firstStream.event, { event: "stream", index: 0, name: "stdout", text: "first\n" });
    assert.ok(
      cellEnd.at - firstStream.at > 700,
      `stream came ${cellEnd.at - firstStream.at} ms before cell end`,
    );
  });

  it("rejects invalid JSON and nbformat 3 as invalid_notebook", async (t) => {
    const broken = await run(t, '{"nbformat": 4, "cells": [');
    assert.equal(broken.outcome.status === "failed" && broken.outcome.error.code, "invalid_notebook");
    const v3 = await run(t, JSON.stringify({ nbformat: 3, nbformat_minor: 0, metadata: {}, worksheets: [] }));
    assert.equal(v3.outcome.status === "failed" && v3.outcome.error.code, "invalid_notebook");
    assert.match(v3.outcome.status === "failed" ? v3.outcome.error.message : "", /nbformat 3/);
  });

  it("cancels a running cell on abort and keeps the saved notebook", async (t) => {
    const controller = new AbortController();
    let abortedAt = 0;
    const r = await run(
      t,
      notebook([{ source: "import time\nprint('sleeping', flush=True)\ntime.sleep(30)" }, { source: "1" }]),
      {
        signal: controller.signal,
        onEvent: (event) => {
          if (event.event === "stream" && abortedAt === 0) {
            abortedAt = performance.now();
            controller.abort();
          }
        },
      },
    );
    assert.deepEqual(r.outcome, { status: "cancelled" });
    const elapsed = performance.now() - abortedAt;
    assert.ok(elapsed < 5_000, `cancelled after ${elapsed} ms`);
    await access(r.outputNotebookPath);
    const nb = await r.executed();
    assert.equal(nb.cells[0]!.metadata.papermill?.status, "failed");
    assert.equal(nb.cells[1]!.metadata.papermill?.status, "pending");
  });

  it("treats SystemExit(0) as success and skips the remaining cells", async (t) => {
    const r = await run(
      t,
      notebook([{ source: "raise SystemExit(0)" }, { source: "raise ValueError('ran')" }]),
    );
    assert.deepEqual(r.outcome, { status: "succeeded" });
    const nb = await r.executed();
    assert.equal(nb.cells[0]!.metadata.papermill?.status, "completed");
    assert.equal(nb.cells[1]!.metadata.papermill?.status, "pending");
    assert.equal(nb.metadata.papermill.exception, false);
  });

  it("fails with timeout when a cell exceeds the per-cell limit", async (t) => {
    const r = await run(t, notebook([{ source: "import time\ntime.sleep(20)" }]), { cellTimeoutSeconds: 1 });
    assert.ok(r.outcome.status === "failed");
    assert.equal(r.outcome.error.code, "timeout");
    assert.equal(r.outcome.error.cell_index, 0);
    assert.equal(r.outcome.error.message, "Cell 0 (In [1]) timed out after 1s");
  });
});
