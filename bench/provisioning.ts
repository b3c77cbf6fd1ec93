/**
 * Provisioning on the simulated market (src/providers/sim): 10% boot failures, 3% launches stuck for
 * good, log-normal boot times (median 60 s, p90 ≈ 190 s), run at HANGAR-time × `--time-scale`.
 *
 * - time to start, per strategy (Coldstart, RoundRobin, Race(3), Coldstart with a warm pool of one):
 *   GPU runs submitted one at a time through the API; the real provisioner launches, the instance
 *   boots the real agent, and the figure is the run's submit → its start on an instance, in
 *   simulated seconds (the agent's own start, ~0.5–1 s, is scaled up with the rest);
 * - leaks: `--launches` launches through the real launch path with `--fault-rate` of every provider
 *   call failing (5xx, 429, timeouts — a timed-out launch still creates its instance), the control
 *   plane restarted `--restarts` times along the way, then every instance ended; the reconciler runs
 *   until the market has nothing left of this deployment. Leaked = instances still up at the end.
 *
 *   node bench/provisioning.ts [--ready-runs 10] [--launches 1000] [--fault-rate 0.2] [--restarts 4] [--time-scale 20]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { HangarClient } from "../src/cli/client.ts";
import { loadConfig } from "../src/config.ts";
import { LIVE_STATES } from "../src/domain/instance.ts";
import {
  DEFAULT_SIM_MARKET,
  InstanceHost,
  type SimMarket,
  SimProvider,
  seededRandom,
} from "../src/providers/sim/index.ts";
import { REPO_ROOT, type RunningServer, startServer } from "../src/server/server.ts";
import { endEverything, launchWithRestarts } from "../test/chaos/sim-launches.ts";
import { machine, percentile, progress, round, secondsSince } from "./lib.ts";

const { values: args } = parseArgs({
  options: {
    "ready-runs": { type: "string", default: "10" },
    launches: { type: "string", default: "1000" },
    "fault-rate": { type: "string", default: "0.2" },
    restarts: { type: "string", default: "4" },
    "time-scale": { type: "string", default: "20" },
  },
});
const READY_RUNS = Number(args["ready-runs"]);
const LAUNCHES = Number(args.launches);
const FAULT_RATE = Number(args["fault-rate"]);
const RESTARTS = Number(args.restarts);
const TIME_SCALE = Number(args["time-scale"]);
const API_KEY = "hgr_bench_key_0123456789abcdef";

const market = (apiFaultRate: number): SimMarket => ({
  offers: DEFAULT_SIM_MARKET.offers,
  behaviour: { ...DEFAULT_SIM_MARKET.behaviour, apiFaultRate, timeScale: TIME_SCALE },
});

async function start(
  dataDir: string,
  sim: SimProvider,
  settings: Record<string, string> = {},
): Promise<RunningServer> {
  const config = loadConfig(
    {
      ...process.env,
      HANGAR_LOG_LEVEL: process.env.HANGAR_BENCH_LOG_LEVEL ?? "silent",
      HANGAR_DESCRIBE_INTERVAL_S: "1",
      HANGAR_RECONCILE_INTERVAL_S: "1",
      HANGAR_SCHEDULER_INTERVAL_MS: "100",
      HANGAR_IDLE_TIMEOUT_S: "3",
      ...settings,
    },
    { dataDir, port: 0, bootstrapApiKey: API_KEY },
  );
  return startServer(config, { extraProviders: [sim] });
}

/**
 * Runs asking for an RTX 4090, one at a time, each after the previous run's instances idled out
 * (a warm pool keeps its own): submit → the run starts on an instance, in simulated seconds.
 */
async function timeToReady(name: string, settings: Record<string, string>) {
  const dataDir = await mkdtemp(join(tmpdir(), "hangar-bench-prov-"));
  const sim = new SimProvider({
    market: market(0),
    host: new InstanceHost(join(dataDir, "sim")),
    random: seededRandom(2026),
  });
  const server = await start(dataDir, sim, settings);
  const client = new HangarClient(server.url, API_KEY);
  const notebook = await client.uploadNotebook(join(REPO_ROOT, "examples/sales-report.ipynb"), "bench.ipynb");
  const warmMin = Number(/:(\d+)/.exec(settings.HANGAR_WARM_POOL ?? "")?.[1] ?? 0);
  const cloudInstances = () => server.ctx.store.listInstances({ provider: "sim", states: LIVE_STATES });
  const seconds: number[] = [];
  let launches = 0;
  let waste = 0;
  try {
    if (warmMin > 0) {
      // The pool fills before the first run, as it would between bursts of work.
      while ((await cloudInstances()).filter((i) => i.readyAt !== null).length < warmMin) await sleep(100);
    }
    for (let i = 0; i < READY_RUNS; i++) {
      while (
        (await cloudInstances()).filter((i) => i.state !== "idle" && i.state !== "ready").length > 0 ||
        (warmMin === 0 && (await cloudInstances()).length > 0)
      ) {
        await sleep(100);
      }
      const run = await client.submitRun(notebook.id, { gpu: { type: "RTX4090", count: 1 }, parameters: {} });
      for (;;) {
        const view = await client.getRun(run.id);
        // A claim by an instance ended meanwhile hands the run back; only a run that stays started counts.
        if (view.status !== "queued" && view.started_at) {
          const simulated = ((Date.parse(view.started_at) - Date.parse(run.created_at)) / 1000) * TIME_SCALE;
          seconds.push(simulated);
          progress(`${name} run ${i + 1}/${READY_RUNS}: started after ${round(simulated, 0)} simulated s`);
          break;
        }
        await sleep(25);
      }
    }
    launches = (await server.ctx.store.listInstances({ provider: "sim" })).length;
  } finally {
    waste = (await server.ctx.metrics.raceWaste.get()).values[0]?.value ?? 0;
    await server.close();
    await sim.close();
    await rm(dataDir, { recursive: true, force: true });
  }
  const sorted = [...seconds].sort((a, b) => a - b);
  return {
    runs: seconds.length,
    p50_s: round(percentile(sorted, 50), 0),
    p90_s: round(percentile(sorted, 90), 0),
    max_s: round(sorted.at(-1) ?? 0, 0),
    instances_launched: launches,
    // Billed time passed on the real clock; the market's hour is TIME_SCALE times shorter.
    race_waste_usd: round(waste * TIME_SCALE, 4),
  };
}

/** Launches with faulty provider calls and control-plane restarts; what is left running at the end. */
async function leaks() {
  const dataDir = await mkdtemp(join(tmpdir(), "hangar-bench-prov-"));
  // The market outlives the control plane, as a cloud does; its instances run nothing here.
  const sim = new SimProvider({
    market: market(FAULT_RATE),
    random: seededRandom(1000),
    maxInstances: LAUNCHES,
  });
  const first = await start(dataDir, sim);
  const started = performance.now();
  const { server, launched, refused } = await launchWithRestarts({
    server: first,
    start: () => start(dataDir, sim),
    sim,
    offers: DEFAULT_SIM_MARKET.offers.filter((o) => !o.spot),
    launches: LAUNCHES,
    restarts: RESTARTS,
    onRestart: (done) => progress(`${done} launches: restarting the control plane`),
  });
  const madeAtProvider = sim.liveInstances().length;
  progress(`${LAUNCHES} launches (${refused} refused or timed out); ending every instance`);
  const { leaked, waitStartedAt } = await endEverything(server, sim);
  const converged = secondsSince(waitStartedAt);
  await server.close();
  await sim.close();
  await rm(dataDir, { recursive: true, force: true });
  return {
    launches: LAUNCHES,
    fault_rate: FAULT_RATE,
    control_plane_restarts: RESTARTS,
    launch_calls_failed: refused,
    instances_at_provider_before_cleanup: madeAtProvider,
    instances_recorded_as_launched: launched,
    seconds_until_none_left: converged,
    leaked_instances: leaked,
    target_leaked: 0,
    wall_s: secondsSince(started),
  };
}

const result: Record<string, unknown> = {
  benchmark: "provisioning",
  machine: machine(),
  time_scale: TIME_SCALE,
};
const strategies: [string, Record<string, string>][] = [
  ["coldstart", { HANGAR_PROVISIONING_STRATEGY: "coldstart" }],
  ["roundrobin", { HANGAR_PROVISIONING_STRATEGY: "roundrobin" }],
  ["race3", { HANGAR_PROVISIONING_STRATEGY: "race", HANGAR_RACE_WIDTH: "3" }],
  ["warm_pool_1", { HANGAR_PROVISIONING_STRATEGY: "coldstart", HANGAR_WARM_POOL: "RTX4090:1" }],
];
const ready: Record<string, unknown> = {};
for (const [name, settings] of strategies) {
  progress(`time to start: ${READY_RUNS} GPU runs on the sim market (x${TIME_SCALE}), ${name}`);
  ready[name] = await timeToReady(name, settings);
}
result.time_to_start = ready;
progress(`leaks: ${LAUNCHES} launches, ${FAULT_RATE * 100}% faulty provider calls, ${RESTARTS} restarts`);
result.leaks = await leaks();
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
