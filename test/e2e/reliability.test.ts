import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { hashSecret } from "../../src/app/api-keys.ts";
import type { RunView } from "../../src/cli/client.ts";
import { waitForRun } from "../../src/cli/commands.ts";
import { newId } from "../../src/domain/ids.ts";
import { writeNotebook } from "../helpers/notebooks.ts";
import { killAgentsOf, type ServerProcess, spawnServer, stopServer, waitFor } from "../helpers/server.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";

async function post(url: string, path: string, body: unknown, token?: string) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
}

/** The pid of the agent process serving an instance. */
async function agentPid(instanceId: string): Promise<number> {
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.split("\0").includes(`HANGAR_INSTANCE_ID=${instanceId}`)) return Number(pid);
  }
  throw new Error(`no agent process for ${instanceId}`);
}

/**
 * Whether any process of the agent's process group (agent, notebook runner) is still alive. Zombies
 * do not count: an agent whose server was killed is reparented, and not every init reaps.
 */
function groupAlive(pgid: number): boolean {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "latin1");
    } catch {
      continue;
    }
    // Fields after the parenthesised command: state, ppid, pgrp, …
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") return true;
  }
  return false;
}

const SLOW_NOTEBOOK = [
  { source: "steps = 30", tags: ["parameters"] },
  {
    source:
      "import os, time, pathlib\nprint('nul\\x00byte')\nfor i in range(steps):\n    print('step', i, flush=True)\n    time.sleep(0.2)\npathlib.Path(os.environ['HANGAR_OUTPUT_DIR'], 'done.txt').write_text(str(steps))",
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
      process.kill(pid, "SIGKILL");
      // The notebook runner the agent started must not keep running (and writing) as an orphan.
      await waitFor("the dead agent's runner to be ended", async () => !groupAlive(pid), 20_000);
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
      assert.ok(log.includes("nul\uFFFDbyte"), "a NUL the notebook printed is stored as U+FFFD");
    });

    it("hands a running run back on graceful shutdown; the next server runs it without spending an attempt", async () => {
      const run = await runningRun();
      const first = run.instance!.instance_id;
      const pid = await agentPid(first);
      // The shutdown grace (2 s) is shorter than the notebook (6 s): the agent must give the run back.
      await server.kill("SIGTERM");
      assert.equal(server.process.exitCode, 0, server.output());
      assert.equal(groupAlive(pid), false, "the agent and its notebook runner exited with the server");
      await server.restart();
      const final = await waitForRun(server.client, run.id, true);
      assert.equal(final.status, "succeeded", JSON.stringify(final));
      assert.equal(final.attempts, 1, "a released run does not spend an attempt");
      assert.notEqual(final.instance?.instance_id, first);
      const log = await server.client.logs(run.id);
      assert.match(
        log,
        new RegExp(`attempt 1 on instance ${first}`),
        "lines from before the release are kept",
      );
      assert.match(log, /step 29/);
    });
  });

  describe(`two server processes on one ${dialect.name} database`, () => {
    const total = dialect.name === "postgres" ? 2000 : 500;
    let fixture: StoreFixture;
    let servers: ServerProcess[];
    let dir: string;

    before(async () => {
      fixture = await dialect.fixture();
      dir = await mkdtemp(join(tmpdir(), "hangar-pair-"));
      // Replicas share the database, the blob store (here: one data dir) and the signing secret.
      const env = {
        ...fixture.env,
        HANGAR_SIGNING_SECRET: "s".repeat(40),
        HANGAR_LOCAL_MAX_INSTANCES: "1",
        // 2,000 submits in seconds from one key: past any sensible default rate limit.
        HANGAR_RATE_LIMIT_PER_MINUTE: "0",
        HANGAR_ORG_RATE_LIMIT_PER_MINUTE: "0",
      };
      const first = await spawnServer(env, { dataDir: dir });
      servers = [first, await spawnServer(env, { dataDir: dir })];
    });
    after(async () => {
      for (const server of servers) await server.kill("SIGTERM");
      await killAgentsOf(dir);
      await fixture.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    it(`dispatch each of ${total} runs exactly once`, async () => {
      const path = await writeNotebook(dir, "trivial.ipynb", [{ source: "x = 1" }]);
      const notebookId = (await servers[0]!.client.uploadNotebook(path, "trivial.ipynb")).id;
      const submitted: string[] = [];
      await Promise.all(
        [0, 1, 2, 3].map(async (lane) => {
          const client = servers[lane % 2]!.client;
          for (let i = lane; i < total; i += 4) submitted.push((await client.submitRun(notebookId, {})).id);
        }),
      );
      // Agents speaking the real protocol to both servers; they finish jobs without running them, so
      // the test measures dispatch. The local provider's real agent takes its share too.
      const store = fixture.open();
      const agents = await Promise.all(
        [0, 1, 2, 3, 4, 5].map(async (n) => {
          const bootstrap = `boot-${n}-${Date.now()}`;
          const id = newId("inst");
          await store.insertInstance({
            id,
            orgId: "org_default",
            provider: "protocol-test",
            gpus: [],
            bootstrapTokenHash: hashSecret(bootstrap),
            createdAt: Date.now(),
          });
          const url = servers[n % 2]!.url;
          const early = await post(url, "/agent/v1/register", {
            instance_id: id,
            bootstrap_token: bootstrap,
          });
          // Until its launch is recorded (provider id and price), an instance's agent is asked to retry.
          assert.equal(early.status, 503);
          assert.equal((early.body as { error: { code: string } }).error.code, "launch_not_recorded");
          await store.recordLaunch(id, {
            providerInstanceId: `test-${n}`,
            machineId: "test",
            pricePerHour: 0,
          });
          const register = await post(url, "/agent/v1/register", {
            instance_id: id,
            bootstrap_token: bootstrap,
          });
          assert.equal(register.status, 200);
          return {
            url,
            token: (register.body as { agent_token: string }).agent_token,
            claimed: [] as string[],
          };
        }),
      );
      const finished = async () => (await store.countJobsByStatus()).succeeded >= total;
      await Promise.all(
        agents.map(async (agent) => {
          for (;;) {
            const claim = await post(agent.url, "/agent/v1/claim", { wait_s: 1 }, agent.token);
            if (claim.status === 204) {
              if (await finished()) return;
              continue;
            }
            const job = claim.body as { job_id: string; lease_token: string };
            agent.claimed.push(job.job_id);
            const done = await post(
              agent.url,
              `/agent/v1/jobs/${job.job_id}/finish`,
              { lease_token: job.lease_token, status: "succeeded" },
              agent.token,
            );
            assert.equal(done.status, 200, JSON.stringify(done.body));
          }
        }),
      );
      const claimed = agents.flatMap((a) => a.claimed);
      assert.equal(new Set(claimed).size, claimed.length, "no run was dispatched twice");
      assert.ok(
        agents.every((a) => a.claimed.length > 0),
        `every agent, on both servers, got work: ${agents.map((a) => a.claimed.length)}`,
      );
      const counts = await store.countJobsByStatus();
      assert.equal(counts.succeeded, total);
      assert.equal(counts.queued + counts.running + counts.failed, 0);
      const runs = await Promise.all(submitted.slice(0, 50).map((id) => servers[1]!.client.getRun(id)));
      assert.ok(runs.every((r) => r.status === "succeeded" && r.attempts === 1));
    });
  });
}
