import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { RunView } from "../../src/cli/client.ts";
import { waitForRun } from "../../src/cli/commands.ts";
import { newId } from "../../src/domain/ids.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { writeNotebook } from "../helpers/notebooks.ts";
import { type ServerProcess, spawnServer, stopServer, waitFor } from "../helpers/server.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";

const exec = promisify(execFile);

/** The pid of the agent process serving an instance. */
async function agentPid(instanceId: string): Promise<number> {
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.split("\0").includes(`HANGAR_INSTANCE_ID=${instanceId}`)) return Number(pid);
  }
  throw new Error(`no agent process for ${instanceId}`);
}

const SLOW_NOTEBOOK = [
  { source: "steps = 30", tags: ["parameters"] },
  {
    source:
      "import os, time, pathlib\nfor i in range(steps):\n    print('step', i, flush=True)\n    time.sleep(0.2)\npathlib.Path(os.environ['HANGAR_OUTPUT_DIR'], 'done.txt').write_text(str(steps))",
  },
];

for (const dialect of DIALECTS) {
  describe(`reliability on ${dialect.name}`, { concurrency: 1 }, () => {
    let fixture: StoreFixture;
    let server: ServerProcess;
    let dir: string;
    let notebookId: string;

    before(async () => {
      fixture = await dialect.fixture();
      dir = await mkdtemp(join(tmpdir(), "hangar-rel-"));
      server = await spawnServer(fixture.env);
      const path = await writeNotebook(dir, "slow.ipynb", SLOW_NOTEBOOK);
      notebookId = (await server.client.uploadNotebook(path, "slow.ipynb")).id;
    });
    after(async () => {
      await stopServer(server);
      await fixture.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    const runningRun = async (): Promise<RunView> => {
      const submitted = await server.client.submitRun(notebookId, { backoff_min_s: 0, backoff_max_s: 1 });
      return waitFor("the run to be inside its notebook", async () => {
        const run = await server.client.getRun(submitted.id);
        return run.status === "running" && run.progress?.phase.startsWith("running cell 2") ? run : null;
      });
    };

    it("retries a run on a new instance when its agent is killed -9", async () => {
      const run = await runningRun();
      const pid = await agentPid(run.instance!.instance_id);
      process.kill(-pid, "SIGKILL");
      const final = await waitForRun(server.client, run.id, true);
      assert.equal(final.status, "succeeded", JSON.stringify(final));
      assert.equal(final.attempts, 2);
      assert.notEqual(
        final.instance?.instance_id,
        run.instance?.instance_id,
        "the retry ran on a new instance",
      );
      const links = await server.client.downloads(run.id);
      assert.deepEqual(
        links.outputs.map((o) => o.path),
        ["done.txt"],
      );
    });

    it("finishes a run when the server is killed -9 mid-run and started again", async () => {
      const run = await runningRun();
      await server.kill("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await server.restart();
      const final = await waitForRun(server.client, run.id, true);
      assert.equal(final.status, "succeeded", JSON.stringify(final));
      assert.equal(final.attempts, 1, "the agent reconnected and kept its lease");
      const log = await server.client.logs(run.id);
      assert.match(log, /step 29/);
    });
  });

  describe(`two processes on one ${dialect.name} database`, () => {
    let fixture: StoreFixture;
    before(async () => {
      fixture = await dialect.fixture();
    });
    after(() => fixture.cleanup());

    it("execute each of 2,000 jobs exactly once", async () => {
      const store = fixture.open();
      await store.migrate();
      await store.ensureOrg("org_test", "test", 0);
      const ids = new Set<string>();
      for (let i = 0; i < 2000; i++) {
        const id = newId("run");
        ids.add(id);
        await store.enqueue({
          id,
          orgId: "org_test",
          kind: "notebook",
          notebookId: null,
          spec: {},
          priority: 0,
          maxAttempts: 3,
          backoffMinMs: 10_000,
          backoffMaxMs: 300_000,
          timeoutMs: 60_000,
          runAt: 0,
          createdAt: 0,
        });
      }
      const worker = () =>
        exec(process.execPath, [join(REPO_ROOT, "test/fixtures/claim-worker.ts")], {
          env: { ...process.env, ...fixture.env },
        });
      const results = await Promise.all([worker(), worker()]);
      const perWorker = results.map((r) => JSON.parse(r.stdout) as string[]);
      const all = perWorker.flat();
      assert.equal(all.length, 2000, "every job completed once");
      assert.equal(new Set(all).size, 2000, "no job completed twice");
      assert.deepEqual(new Set(all), ids);
      assert.ok(
        perWorker.every((done) => done.length > 0),
        `both processes took work: ${perWorker.map((d) => d.length)}`,
      );
      const counts = await store.countJobsByStatus();
      assert.equal(counts.succeeded, 2000);
    });
  });
}
