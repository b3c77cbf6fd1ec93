import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { submitNotebookRun, waitForRun } from "../../src/cli/commands.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { writeNotebook } from "../helpers/notebooks.ts";
import { FAST_ENV, type ServerProcess, spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";

const exec = promisify(execFile);

describe("running notebooks end to end (SQLite, local provider)", { concurrency: 1 }, () => {
  let server: ServerProcess;
  let dir: string;
  const cli = (args: string[]) =>
    exec(join(REPO_ROOT, "hangar"), args, {
      env: { ...process.env, HANGAR_URL: server.url, HANGAR_API_KEY: TEST_API_KEY },
    }).catch((error: { code: number; stdout: string; stderr: string }) => error);

  before(async () => {
    // Nothing here tests lapsed leases: on a loaded machine a 3 s lease turned a late heartbeat into a retry.
    server = await spawnServer({ HANGAR_LEASE_S: "15" });
    dir = await mkdtemp(join(tmpdir(), "hangar-run-"));
  });
  after(async () => {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  });

  it("runs the example notebook with its dataset and downloads every result through the CLI", async () => {
    const run = await cli([
      "run",
      join(REPO_ROOT, "examples/sales-report.ipynb"),
      "--dataset",
      join(REPO_ROOT, "examples/data"),
      "-p",
      "region=south",
      "-p",
      "top_n=2",
      "--wait",
      "--json",
    ]);
    const view = JSON.parse(run.stdout) as { id: string; status: string; error: unknown; attempts: number };
    assert.equal(view.status, "succeeded", run.stdout + server.output());
    assert.equal(view.error, null);
    assert.equal(view.attempts, 1);

    const out = join(dir, "download");
    const download = await cli(["download", view.id, "--out", out]);
    assert.match(download.stdout, /executed\.ipynb/);
    const report = JSON.parse(await readFile(join(out, "output/report.json"), "utf8"));
    assert.equal(report.region, "south", "the injected parameter reached the kernel");
    assert.equal(report.top.length, 2);
    const csv = await readFile(join(out, "output/summary.csv"), "utf8");
    assert.match(csv, /^product,revenue\r?\n/);
    const executed = JSON.parse(await readFile(join(out, "executed.ipynb"), "utf8"));
    const tags = executed.cells.map((c: { metadata: { tags?: string[] } }) => c.metadata.tags?.[0] ?? null);
    assert.equal(tags[tags.indexOf("parameters") + 1], "injected-parameters");
    for (const cell of executed.cells) assert.equal(cell.metadata.papermill.status, "completed");
    const log = await readFile(join(out, "logs.txt"), "utf8");
    assert.match(log, /sales rows for region 'south'/);

    const status = await cli(["status", view.id]);
    assert.match(status.stdout, /status\s+succeeded/);
    assert.match(status.stdout, /running on CPU/);
  });

  it("records each launch in the machine history, with the local machine's time to ready", async () => {
    const shown = await cli(["machines", "--json"]);
    const { machines, attempts } = JSON.parse(shown.stdout) as {
      machines: {
        provider: string;
        machine_id: string;
        ready: number;
        success_rate: number;
        median_time_to_ready_s: number;
      }[];
      attempts: { outcome: string; price_per_hour: number; time_to_ready_s: number | null }[];
    };
    assert.equal(machines.length, 1, shown.stdout);
    assert.equal(machines[0]?.provider, "local");
    assert.equal(machines[0]?.machine_id, hostname());
    assert.ok((machines[0]?.ready ?? 0) >= 1);
    assert.equal(machines[0]?.success_rate, 1);
    assert.ok((machines[0]?.median_time_to_ready_s ?? 0) > 0);
    assert.ok(
      attempts.some((a) => a.outcome === "ready" && a.price_per_hour === 0 && (a.time_to_ready_s ?? 0) > 0),
    );
    const table = await cli(["machines"]);
    assert.match(table.stdout, /^local\s+\S+\s+\d+\s+\d+\s+0\s+100%\s+[\d.]+s\s+ok$/m);
  });

  it("fails a run whose cell raises, keeps the executed notebook and outputs, and exits non-zero", async () => {
    const notebook = await writeNotebook(dir, "fails.ipynb", [
      {
        source:
          "import os, pathlib\npathlib.Path(os.environ['HANGAR_OUTPUT_DIR'], 'partial.txt').write_text('before')",
      },
      { source: "raise ValueError('bad value 42')" },
      { source: "print('never')" },
    ]);
    const run = await cli(["run", notebook, "--wait", "--json"]);
    assert.equal((run as { code?: number }).code, 1);
    const view = JSON.parse(run.stdout) as {
      id: string;
      status: string;
      attempts: number;
      error: {
        code: string;
        message: string;
        details: { cell_index: number; ename: string; evalue: string };
      };
    };
    assert.equal(view.status, "failed");
    assert.equal(view.attempts, 1, "a failing cell is not retried");
    assert.equal(view.error.code, "cell_error");
    assert.equal(view.error.details.cell_index, 1);
    assert.equal(view.error.details.ename, "ValueError");
    assert.equal(view.error.details.evalue, "bad value 42");
    const links = await server.client.downloads(view.id);
    assert.ok(links.executed_notebook, "the executed notebook is saved after a failure");
    assert.deepEqual(
      links.outputs.map((o) => o.path),
      ["partial.txt"],
    );
    const executed = (await (await fetch(links.executed_notebook.url)).json()) as {
      cells: { metadata: { papermill?: { status: string } } }[];
    };
    const statuses = executed.cells.map((c) => c.metadata.papermill?.status ?? null);
    assert.ok(statuses.includes("failed"));
    assert.equal(statuses.at(-1), "pending");
  });

  it("streams logs while running and cancels a running notebook on request", async () => {
    const notebook = await writeNotebook(dir, "slow.ipynb", [
      { source: "import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.1)" },
    ]);
    const run = await submitNotebookRun(server.client, notebook, { dataset: [], param: [] });
    const stream = server.client.followLogs(run.id);
    let seen = "";
    while (!seen.includes("tick 3")) {
      const next = await stream.next();
      assert.equal(next.done, false, `log ended early: ${seen}`);
      seen += next.value;
    }
    const cancelled = await server.client.cancelRun(run.id);
    assert.equal(cancelled.status, "running", "a running run is cancelled by its agent");
    const started = Date.now();
    const final = await waitForRun(server.client, run.id, true);
    assert.equal(final.status, "cancelled");
    assert.ok(Date.now() - started < 15_000, "cancellation reaches the instance within seconds");
    for (;;) {
      const next = await stream.next();
      if (next.done) {
        assert.equal(next.value, "cancelled");
        break;
      }
    }
    await assert.rejects(server.client.cancelRun(run.id), { status: 409, code: "run_finished" });
  });

  it("fails a run that exceeds its timeout without retrying it", async () => {
    const notebook = await writeNotebook(dir, "forever.ipynb", [{ source: "import time\ntime.sleep(120)" }]);
    const run = await submitNotebookRun(server.client, notebook, { dataset: [], param: [], timeout: 3 });
    const final = await waitForRun(server.client, run.id, true);
    assert.equal(final.status, "failed");
    assert.equal(final.error?.code, "timeout");
    assert.equal(final.attempts, 1);
  });

  it("retries a run whose kernel died, from a clean output area; notebooks see none of Hangar's settings", async () => {
    const marker = join(dir, `first-attempt-${Date.now()}`);
    const notebook = await writeNotebook(dir, "flaky.ipynb", [
      { source: "marker = ''", tags: ["parameters"] },
      {
        source: [
          "import json, os, pathlib",
          "out = pathlib.Path(os.environ['HANGAR_OUTPUT_DIR'])",
          "if not os.path.exists(marker):",
          "    pathlib.Path(marker).write_text('1')",
          "    (out / 'stale.txt').write_text('from the first attempt')",
          "    os._exit(1)",
          "(out / 'env.json').write_text(json.dumps(sorted(k for k in os.environ if k.startswith('HANGAR_'))))",
        ].join("\n"),
      },
    ]);
    const { id } = await server.client.uploadNotebook(notebook, "flaky.ipynb");
    const run = await server.client.submitRun(id, {
      parameters: { marker },
      backoff_min_s: 0,
      backoff_max_s: 1,
    });
    const final = await waitForRun(server.client, run.id, true);
    assert.equal(final.status, "succeeded", JSON.stringify(final));
    assert.equal(final.attempts, 2, "a dead kernel is worth another attempt");
    const links = await server.client.downloads(run.id);
    assert.deepEqual(
      links.outputs.map((o) => o.path),
      ["env.json"],
      "the first attempt's files are gone",
    );
    const seen = JSON.parse(await (await fetch(links.outputs[0]!.url)).text()) as string[];
    assert.deepEqual(seen, ["HANGAR_INPUT_DIR", "HANGAR_OUTPUT_DIR"]);
  });

  it("serves the agent as one bundled file", async () => {
    const response = await fetch(`${server.url}/agent.mjs`);
    assert.equal(response.status, 200);
    const text = await response.text();
    assert.match(text, /HANGAR_BOOTSTRAP_TOKEN/);
    assert.match(text, /injected-parameters/, "the bundle carries the notebook runner");
    const file = join(dir, "agent.mjs");
    await writeFile(file, text);
    const bare = await exec(process.execPath, [file], { env: { PATH: process.env.PATH } }).catch(
      (error: { code: number; stdout: string }) => error,
    );
    assert.equal((bare as { code?: number }).code, 2);
    assert.match(bare.stdout, /HANGAR_URL is not set/);
  });

  it("reports jobs, failures and instances by state in /metrics", async () => {
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const instances = [...metrics.matchAll(/^hangar_instances\{state="(\w+)"\} (\d+)$/gm)];
    assert.deepEqual(instances.map((m) => m[1]).sort(), [
      "busy",
      "idle",
      "provisioning",
      "ready",
      "terminated",
    ]);
    assert.ok(instances.reduce((sum, m) => sum + Number(m[2]), 0) >= 1);
    assert.match(metrics, /hangar_jobs\{state="succeeded"\} [1-9]/);
    assert.match(metrics, /hangar_run_failures_total\{code="cell_error"\} 1/);
  });
});

describe("the quick start", () => {
  it("runs the example and leaves a deployment that `hangar server` and the CLI then use as is", async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), "hangar-quickstart-"));
    t.after(() => rm(dataDir, { recursive: true, force: true }));
    const { HANGAR_API_KEY: _key, HANGAR_BOOTSTRAP_API_KEY: _bootstrap, ...env } = process.env;
    const first = await exec(
      join(REPO_ROOT, "hangar"),
      ["quickstart", "--data-dir", dataDir, "--out", join(dataDir, "out")],
      { env: { ...env, ...FAST_ENV } },
    );
    const runId = /Results of (run_\w+)/.exec(first.stdout)?.[1];
    assert.ok(runId, first.stdout + first.stderr);
    const report = JSON.parse(await readFile(join(dataDir, "out", runId, "output/report.json"), "utf8"));
    assert.equal(report.region, "north");

    const server = await spawnServer({ HANGAR_BOOTSTRAP_API_KEY: "" }, { dataDir });
    t.after(() => stopServer(server));
    const runs = await exec(join(REPO_ROOT, "hangar"), ["runs", "--json"], {
      env: { ...env, HANGAR_URL: server.url, HANGAR_DATA_DIR: dataDir },
    });
    const listed = JSON.parse(runs.stdout) as { id: string; status: string }[];
    assert.deepEqual(
      listed.map((run) => [run.id, run.status]),
      [[runId, "succeeded"]],
      "the saved admin key opens the quick start's deployment",
    );
  });
});
