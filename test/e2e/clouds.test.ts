import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { promisify } from "node:util";
import { RunPodClient } from "../../src/providers/runpod/runpod-client.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { type RunPodEmulator, startRunPodEmulator } from "../emulators/runpod.ts";
import { startVastEmulator } from "../emulators/vastai.ts";
import { writeNotebook } from "../helpers/notebooks.ts";
import { s3BlobSettings, startS3rver } from "../helpers/object-stores.ts";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";

const exec = promisify(execFile);

/** Blobs in S3 (s3rver): a cloud instance cannot read the server's disk. */
async function s3Settings(t: TestContext): Promise<Record<string, string>> {
  const s3 = await startS3rver();
  t.after(() => s3.close());
  return s3BlobSettings(s3.endpoint, `hangar-clouds-${randomBytes(4).toString("hex")}`);
}

/** A server whose GPU work goes to the emulated RunPod; cloud state is checked every second. */
async function serverWithRunPod(t: TestContext, runpod: RunPodEmulator, extra: Record<string, string> = {}) {
  const server = await spawnServer({
    ...(await s3Settings(t)),
    RUNPOD_API_KEY: runpod.apiKey,
    RUNPOD_GRAPHQL_URL: runpod.url,
    HANGAR_DESCRIBE_INTERVAL_S: "1",
    HANGAR_RECONCILE_INTERVAL_S: "1",
    ...extra,
  });
  t.after(() => stopServer(server));
  return server;
}

function cli(server: ServerProcess, args: string[]) {
  return exec(join(REPO_ROOT, "hangar"), args, {
    env: { ...process.env, HANGAR_URL: server.url, HANGAR_API_KEY: TEST_API_KEY },
  }).catch((error: { stdout: string; stderr: string }) => error);
}

const submitGpuRun = (server: ServerProcess, extra: string[] = []) =>
  cli(server, [
    "run",
    join(REPO_ROOT, "examples/sales-report.ipynb"),
    "--dataset",
    join(REPO_ROOT, "examples/data"),
    "-p",
    "region=west",
    "--gpu",
    "RTX 4090",
    "--json",
    ...extra,
  ]);

const livePods = (runpod: RunPodEmulator) =>
  [...runpod.pods.values()].filter((pod) => pod.desiredStatus !== "TERMINATED");

describe("GPU work on an emulated cloud, through the real clients, agent and object store", () => {
  it('runs a notebook with --gpu "RTX 4090" on RunPod: pod launched, agent booted from the control plane, outputs in S3', async (t) => {
    const runpod = await startRunPodEmulator();
    t.after(() => runpod.close());
    const server = await serverWithRunPod(t, runpod);
    const submitted = await submitGpuRun(server, ["--wait"]);
    const run = JSON.parse(submitted.stdout) as {
      id: string;
      status: string;
      instance: { provider: string; gpus: { name: string }[] } | null;
    };
    assert.equal(run.status, "succeeded", submitted.stdout + server.output());
    assert.equal(run.instance?.provider, "runpod");

    const pods = [...runpod.pods.values()];
    assert.equal(pods.length, 1, "one pod for one run");
    const pod = pods[0]!;
    assert.deepEqual([pod.gpuTypeId, pod.gpuCount, pod.podType], ["NVIDIA GeForce RTX 4090", 1, "RESERVED"]);
    assert.match(pod.dockerArgs, /agent\.mjs/, "the pod fetched the agent from the control plane");
    assert.equal(pod.env.HANGAR_URL, server.url);
    assert.ok(!Object.values(pod.env).some((v) => v.includes(runpod.apiKey)), "the account key stays home");

    const out = await mkdtemp(join(tmpdir(), "hangar-clouds-"));
    t.after(() => rm(out, { recursive: true, force: true }));
    await cli(server, ["download", run.id, "--out", out]);
    const report = JSON.parse(await readFile(join(out, "output/report.json"), "utf8")) as { region: string };
    assert.equal(report.region, "west");

    // The run is charged what the created pod costs, as the machine history shows.
    const history = await server.client.request<{
      machines: { provider: string; machine_id: string; ready: number }[];
    }>("GET", "/api/v1/machines/history");
    const machine = history.machines.find((m) => m.provider === "runpod");
    assert.equal(machine?.machine_id, pod.machineId);
    assert.equal(machine?.ready, 1);

    // What is billing now: the idle pod, at the price RunPod reports for it.
    const listed = JSON.parse((await cli(server, ["instances", "--json"])).stdout) as {
      instances: { provider: string; provider_instance_id: string; state: string; price_per_hour: number }[];
      live: number;
      price_per_hour: number;
      spend: { provider: string; recorded_per_hour: number; reported_per_hour: number | null }[];
    };
    assert.deepEqual(
      listed.instances.map((i) => [i.provider, i.provider_instance_id, i.state, i.price_per_hour]),
      [["runpod", pod.id, "idle", pod.costPerHr]],
    );
    assert.deepEqual([listed.live, listed.price_per_hour], [1, pod.costPerHr]);
    // RunPod's own account figure (currentSpendPerHr) beside the price recorded at launch.
    assert.deepEqual(listed.spend, [
      { provider: "runpod", recorded_per_hour: pod.costPerHr, reported_per_hour: pod.costPerHr },
    ]);
    const table = (await cli(server, ["instances"])).stdout;
    assert.match(table, new RegExp(`1 live, billing \\$${pod.costPerHr.toFixed(3)}/h`));
    assert.match(
      table,
      new RegExp(
        `runpod: \\$${pod.costPerHr.toFixed(3)}/h recorded at launch, \\$${pod.costPerHr.toFixed(3)}/h by its own account`,
      ),
    );
  });

  it('runs a notebook with --gpu "RTX 4090" on Vast.ai: the cheapest ask rented, its container runs the agent', async (t) => {
    const vast = await startVastEmulator();
    t.after(() => vast.close());
    const server = await spawnServer({
      ...(await s3Settings(t)),
      VAST_API_KEY: vast.apiKey,
      VAST_API_URL: vast.url,
      HANGAR_DESCRIBE_INTERVAL_S: "1",
    });
    t.after(() => stopServer(server));
    const submitted = await submitGpuRun(server, ["--wait"]);
    const run = JSON.parse(submitted.stdout) as {
      id: string;
      status: string;
      instance: { provider: string };
    };
    assert.equal(run.status, "succeeded", submitted.stdout + server.output());
    assert.equal(run.instance.provider, "vastai");
    assert.equal(vast.creates.length, 1, "one rental for one run");
    const create = vast.creates[0]!;
    assert.equal(create.price, null, "on-demand, not a bid");
    const [flag, command] = create.args as string[];
    assert.equal(flag, "-c");
    assert.match(command ?? "", /agent\.mjs/, "the container fetches the agent from the control plane");
    // The cheapest rentable RTX 4090 (7006 is cheaper but rented).
    assert.deepEqual(
      vast.market.filter((offer) => offer.rented).map((offer) => offer.id),
      [7001, 7006],
      "ask 7001 was rented",
    );
    const out = await mkdtemp(join(tmpdir(), "hangar-clouds-"));
    t.after(() => rm(out, { recursive: true, force: true }));
    await cli(server, ["download", run.id, "--out", out]);
    const report = JSON.parse(await readFile(join(out, "output/report.json"), "utf8")) as { region: string };
    assert.equal(report.region, "west");
  });

  it("races a run asking for it (--strategy race): pods on both RunPod clouds, the loser ended once one registers", async (t) => {
    const runpod = await startRunPodEmulator("rp_test_key", { bootDelayMs: 300 });
    t.after(() => runpod.close());
    const server = await serverWithRunPod(t, runpod);
    const submitted = await submitGpuRun(server, ["--strategy", "race", "--wait"]);
    const run = JSON.parse(submitted.stdout) as { status: string; strategy: string | null };
    assert.equal(run.status, "succeeded", submitted.stdout + server.output());
    assert.equal(run.strategy, "race");
    const pods = [...runpod.pods.values()];
    assert.deepEqual(
      pods.map((pod) => pod.gpuTypeId),
      ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"],
      "community and secure cloud raced (RunPod's two on-demand RTX 4090 offers)",
    );
    await waitFor("the losing pod to be terminated", async () => livePods(runpod).length <= 1);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const waste = Number(/^hangar_race_waste_usd_total (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(waste > 0, `the loser's cost is recorded: ${waste}`);
  });

  it("never holds more pods than HANGAR_CLOUD_MAX_INSTANCES, however many runs wait", async (t) => {
    const runpod = await startRunPodEmulator();
    t.after(() => runpod.close());
    const server = await serverWithRunPod(t, runpod, { HANGAR_CLOUD_MAX_INSTANCES: "1" });
    const ids = await Promise.all(
      [1, 2, 3].map(async () => (JSON.parse((await submitGpuRun(server)).stdout) as { id: string }).id),
    );
    let most = 0;
    for (const id of ids) {
      await waitFor(`run ${id} to end`, async () => {
        most = Math.max(most, livePods(runpod).length);
        const view = await server.client.request<{ status: string }>("GET", `/api/v1/runs/${id}`);
        return view.status === "succeeded" ? view : null;
      });
    }
    assert.equal(most, 1, "one pod at a time");
    assert.equal(runpod.pods.size, 1, "the one pod took the runs in turn");
  });

  it("resumes a run whose spot pod was preempted on a new pod, without spending an attempt", async (t) => {
    const runpod = await startRunPodEmulator();
    t.after(() => runpod.close());
    // A lease longer than the describe interval: the preemption is seen before the lease lapses.
    const server = await serverWithRunPod(t, runpod, { HANGAR_SPOT: "1", HANGAR_LEASE_S: "10" });
    const dir = await mkdtemp(join(tmpdir(), "hangar-preempt-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const notebook = await writeNotebook(dir, "slow.ipynb", [
      {
        source:
          "import os, time\ntime.sleep(6)\nopen(os.path.join(os.environ['HANGAR_OUTPUT_DIR'], 'done.txt'), 'w').write('ok')",
      },
    ]);
    const submitted = await cli(server, ["run", notebook, "--gpu", "RTX 4090", "--json"]);
    const { id } = JSON.parse(submitted.stdout) as { id: string };
    const first = await waitFor("the run to start on a pod", async () => {
      const view = await server.client.request<{ status: string }>("GET", `/api/v1/runs/${id}`);
      return view.status === "running" ? [...runpod.pods.values()][0] : null;
    });
    assert.equal(first.podType, "INTERRUPTABLE", "HANGAR_SPOT=1 rents spot pods");
    await runpod.preempt(first.id);
    const done = await waitFor(
      "the run to finish after the preemption",
      async () => {
        const view = await server.client.request<{ status: string; attempts: number }>(
          "GET",
          `/api/v1/runs/${id}`,
        );
        return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
      },
      120_000,
    );
    assert.equal(done.status, "succeeded", server.output());
    assert.equal(done.attempts, 1, "the preempted attempt is not counted");
    assert.equal(runpod.pods.size, 2, "a second pod took the run over");
    assert.equal(runpod.pods.get(first.id)?.desiredStatus, "TERMINATED", "the preempted pod was ended");
  });

  it("runs a GPU notebook on the simulated market (HANGAR_SIM), whose instances end with the server", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "hangar-sim-e2e-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const marketFile = join(dir, "market.json");
    await writeFile(
      marketFile,
      JSON.stringify({ behaviour: { bootFailureRate: 0, stuckRate: 0, bootMedianS: 60, timeScale: 300 } }),
    );
    const server = await spawnServer({ HANGAR_SIM: marketFile });
    t.after(() => stopServer(server));
    const offers = await cli(server, ["offers", "--provider", "sim", "--gpu", "RTX4090", "--json"]);
    const listed = JSON.parse(offers.stdout) as { provider: string; price_per_hour: number; spot: boolean }[];
    assert.deepEqual(
      listed.map((o) => [o.provider, o.price_per_hour, o.spot]),
      [
        ["sim", 0.2, true],
        ["sim", 0.34, false],
        ["sim", 0.39, false],
        ["sim", 0.44, false],
      ],
    );
    const submitted = await submitGpuRun(server, ["--wait"]);
    const run = JSON.parse(submitted.stdout) as { status: string; instance: { provider: string } };
    assert.equal(run.status, "succeeded", submitted.stdout + server.output());
    assert.equal(run.instance.provider, "sim");
    await server.kill("SIGTERM");
    const agents = async () => {
      const found: string[] = [];
      for (const pid of await readdir("/proc").catch(() => [] as string[])) {
        const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
        if (environ.includes(`HANGAR_URL=${server.url}\0`)) found.push(pid);
      }
      return found;
    };
    await waitFor(
      "the sim's agents to end with the server",
      async () => (await agents()).length === 0,
      20_000,
    );
  });

  it("leaves no pod behind after the control plane is killed in the middle of launches", async (t) => {
    const runpod = await startRunPodEmulator("rp_test_key", { bootDelayMs: 1_500 });
    t.after(() => runpod.close());
    const server = await serverWithRunPod(t, runpod, { HANGAR_IDLE_TIMEOUT_S: "2" });
    const runs: string[] = [];
    for (let i = 0; i < 3; i++)
      runs.push((JSON.parse((await submitGpuRun(server)).stdout) as { id: string }).id);
    await waitFor("pods being deployed", async () => runpod.pods.size >= 2, 30_000);
    await server.kill("SIGKILL");

    // A pod someone launched with this deployment's label but for no instance it knows: a stray.
    const deployment = (await readFile(join(server.dataDir, "deployment-id"), "utf8")).trim();
    const stray = await new RunPodClient({ apiKey: runpod.apiKey, graphqlUrl: runpod.url }).deployPod({
      name: "stray",
      imageName: "x",
      cloudType: "COMMUNITY",
      gpuTypeId: "NVIDIA GeForce RTX 4090",
      gpuCount: 1,
      containerDiskInGb: 10,
      volumeInGb: 0,
      dockerArgs: "sleep 600",
      env: [
        { key: "HANGAR_LABEL_HANGAR_DEPLOYMENT", value: deployment },
        { key: "HANGAR_LABEL_HANGAR_INSTANCE", value: "inst_never_launched" },
      ],
    });

    await server.restart();
    for (const id of runs) {
      await waitFor(
        `run ${id} to end`,
        async () => {
          const view = await server.client.request<{ status: string }>("GET", `/api/v1/runs/${id}`);
          return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
        },
        180_000,
      );
    }
    await waitFor(
      "every pod to be terminated",
      async () =>
        livePods(runpod).length === 0 && ![...runpod.pods.keys()].some((id) => runpod.host.isRunning(id)),
      60_000,
    ).catch((error: Error) => {
      throw new Error(
        `${error.message}: ${JSON.stringify(livePods(runpod).map((p) => [p.id, p.name]))}\n${server.output()}`,
      );
    });
    assert.equal(runpod.pods.get(stray.id)?.desiredStatus, "TERMINATED", "the stray was reconciled away");
    const statuses = await Promise.all(
      runs.map((id) => server.client.request<{ status: string }>("GET", `/api/v1/runs/${id}`)),
    );
    assert.deepEqual(
      statuses.map((s) => s.status),
      ["succeeded", "succeeded", "succeeded"],
      "the runs finished on the pods launched before the crash or after it",
    );
  });
});
