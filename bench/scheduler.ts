/**
 * Scheduler throughput and latency on SQLite and PostgreSQL, with pg-boss, Graphile Worker and BullMQ
 * (Redis and PostgreSQL backends) on the same PostgreSQL and Redis as the references (bench/queue-peers.ts).
 * Prints one JSON object on stdout; progress goes to stderr.
 *
 *   node bench/scheduler.ts [--jobs 5000] [--workers 4] [--batches 1,50] [--reps 3]
 *                           [--latency-seconds 3] [--latency-max-rate 1000] [--no-peers]
 *
 * PostgreSQL: HANGAR_BENCH_DATABASE_URL, else HANGAR_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test.
 * Every measurement runs on a fresh SQLite file / PostgreSQL schema (in a scratch database created for
 * the run when the role may create one), all dropped afterwards. The reference queues come from
 * bench/node_modules (bench/package.json); they are installed with `npm ci --prefix bench` when missing.
 * Redis: HANGAR_BENCH_REDIS_URL, else redis://127.0.0.1:6379.
 *
 * Hangar's claims run with fair share on, over jobs of two orgs, so its fairness and concurrency
 * checks are on the measured path as they are in the server.
 */
import { EventEmitter, once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import pg from "pg";
import { newId } from "../src/domain/ids.ts";
import { createPostgresStore } from "../src/store/postgres/index.ts";
import { createSqliteStore } from "../src/store/sqlite/index.ts";
import type { NewJob, Store } from "../src/store/store.ts";
import { machine, progress, round, type Spread, secondsSince, spread } from "./lib.ts";
import {
  ensureBenchPackages,
  type LatencyRun,
  latencyRun,
  latencySpreads,
  QUEUE_PEERS,
  SETTLE_MS,
} from "./queue-peers.ts";

const { values: args } = parseArgs({
  options: {
    jobs: { type: "string", default: "5000" },
    workers: { type: "string", default: "4" },
    batches: { type: "string", default: "1,50" },
    reps: { type: "string", default: "3" },
    "latency-seconds": { type: "string", default: "3" },
    "latency-max-rate": { type: "string", default: "1000" },
    "no-peers": { type: "boolean", default: false },
  },
});

const positive = (name: string, raw: string): number => {
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`--${name} must be a positive number (got "${raw}")`);
  return value;
};
const JOBS = Math.round(positive("jobs", args.jobs));
const WORKERS = Math.round(positive("workers", args.workers));
const BATCHES = args.batches.split(",").map((b) => Math.round(positive("batches", b)));
const REPS = Math.round(positive("reps", args.reps));
const LATENCY_S = positive("latency-seconds", args["latency-seconds"]);
const LATENCY_MAX_RATE = positive("latency-max-rate", args["latency-max-rate"]);
const TARGET_JOBS_PER_S = 2000;
/** Enqueuers running at once while filling the queue (as concurrent API requests would). */
const ENQUEUE_CONCURRENCY = 8;
/** The server's fallback poll when a claimer was not woken (AgentHub.claim). */
const FALLBACK_POLL_MS = 250;
const LEASE_MS = 60_000;
/** Jobs alternate between two orgs, so fair share has orgs to weigh on every claim. */
const ORGS = ["org_bench_a", "org_bench_b"];
const REDIS_URL = process.env.HANGAR_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const SERVER_URL =
  process.env.HANGAR_BENCH_DATABASE_URL ??
  process.env.HANGAR_TEST_DATABASE_URL ??
  "postgres://postgres@127.0.0.1:5432/test";
/**
 * The database every measurement uses: a scratch database of its own when we may create one. Kysely's
 * migrator looks for its bookkeeping tables in every schema of the database, so migrating a fresh schema
 * fails while another schema (a test run's) holds them; a database of our own sidesteps that.
 */
let DATABASE_URL = SERVER_URL;
let scratchDatabase: string | null = null;

// ---------------------------------------------------------------------------------------------------
// Stores under test: a fresh database per measurement.

type Dialect = "sqlite" | "postgres";

interface OpenedStore {
  store: Store;
  cleanup(): Promise<void>;
}

const cleanups = new Set<() => Promise<void>>();

async function adminQuery(sql: string, url = DATABASE_URL): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

const schemaName = (prefix: string) =>
  `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;

async function openStore(dialect: Dialect): Promise<OpenedStore> {
  let store: Store;
  let drop: () => Promise<void>;
  if (dialect === "sqlite") {
    const dir = await mkdtemp(join(tmpdir(), "hangar-bench-"));
    store = createSqliteStore(join(dir, "hangar.sqlite"));
    drop = () => rm(dir, { recursive: true, force: true });
  } else {
    const schema = schemaName("bench_hangar");
    await adminQuery(`create schema ${schema}`);
    store = createPostgresStore({ connectionString: DATABASE_URL, schema });
    drop = () => adminQuery(`drop schema if exists ${schema} cascade`);
  }
  const cleanup = async () => {
    cleanups.delete(cleanup);
    await store.close().catch(() => undefined);
    await drop();
  };
  cleanups.add(cleanup);
  await store.migrate();
  for (const org of ORGS) await store.accounts.ensureOrg(org, org, Date.now());
  return { store, cleanup };
}

function newJob(i: number): NewJob {
  const now = Date.now();
  return {
    id: newId("run"),
    orgId: ORGS[i % ORGS.length]!,
    kind: "notebook",
    notebookId: null,
    spec: {
      notebook_id: "nb_bench",
      notebook_name: "bench.ipynb",
      datasets: [],
      parameters: { i },
      gpu: null,
    },
    priority: 0,
    maxAttempts: 3,
    backoffMinMs: 1000,
    backoffMaxMs: 60_000,
    timeoutMs: 3_600_000,
    runAt: now,
    createdAt: now,
  };
}

/** Runs `count` tasks with at most `concurrency` in flight. */
async function pooled(count: number, concurrency: number, task: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

// ---------------------------------------------------------------------------------------------------
// Throughput: fill the queue, then W workers claim `batch` at a time and finish each job.

interface ThroughputRun {
  /** null where the queue was filled in bulk (pg-boss). */
  enqueuePerS: number | null;
  jobsPerS: number;
}

async function hangarThroughput(dialect: Dialect, batch: number): Promise<ThroughputRun> {
  const { store, cleanup } = await openStore(dialect);
  try {
    const enqueueStart = performance.now();
    await pooled(JOBS, ENQUEUE_CONCURRENCY, (i) => store.enqueue(newJob(i)));
    const enqueuePerS = JOBS / ((performance.now() - enqueueStart) / 1000);

    let claimed = 0;
    let finished = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: WORKERS }, async (_, w) => {
        for (;;) {
          const jobs = await store.claim({
            owner: `bench-${w}`,
            limit: batch,
            leaseMs: LEASE_MS,
            now: Date.now(),
            fairShare: true,
          });
          claimed += jobs.length;
          if (jobs.length === 0) {
            // PostgreSQL skips rows other claimers hold: empty is final only once everything was claimed.
            if (claimed >= JOBS) return;
            await sleep(1);
            continue;
          }
          // Each job is finished on its own, as separate agents finish theirs.
          await Promise.all(
            jobs.map(async (job) => {
              const done = await store.finish(
                { jobId: job.id, leaseToken: job.leaseToken! },
                { status: "succeeded" },
                Date.now(),
              );
              if (done?.status !== "succeeded") throw new Error(`finish of ${job.id} did not succeed`);
            }),
          );
          finished += jobs.length;
        }
      }),
    );
    const jobsPerS = JOBS / ((performance.now() - start) / 1000);
    const counts = await store.countJobsByStatus();
    if (finished !== JOBS || counts.succeeded !== JOBS) {
      throw new Error(`${dialect}: finished ${finished}, succeeded ${counts.succeeded}, expected ${JOBS}`);
    }
    return { enqueuePerS, jobsPerS };
  } finally {
    await cleanup();
  }
}

// ---------------------------------------------------------------------------------------------------
// Latency: a producer enqueues at a fixed rate; idle workers wait for the in-process "work" event
// (with the server's 250 ms fallback poll), exactly as AgentHub.claim does.

async function hangarLatency(dialect: Dialect, rate: number): Promise<LatencyRun> {
  const { store, cleanup } = await openStore(dialect);
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const submittedAt = new Map<string, number>();
  const latencies: number[] = [];
  let produced = 0;
  let consumed = 0;
  let producing = true;
  const finished = () => !producing && consumed >= produced;
  try {
    const workers = Array.from({ length: WORKERS }, async (_, w) => {
      while (!finished()) {
        const [job] = await store.claim({
          owner: `bench-${w}`,
          limit: 1,
          leaseMs: LEASE_MS,
          now: Date.now(),
          fairShare: true,
        });
        const claimedAt = performance.now();
        if (job) {
          latencies.push(claimedAt - submittedAt.get(job.id)!);
          consumed++;
          await store.finish(
            { jobId: job.id, leaseToken: job.leaseToken! },
            { status: "succeeded" },
            Date.now(),
          );
          continue;
        }
        if (finished()) return;
        await once(events, "work", { signal: AbortSignal.timeout(FALLBACK_POLL_MS) }).catch(() => undefined);
      }
    });

    const inFlight = new Set<Promise<void>>();
    const start = performance.now();
    const durationMs = LATENCY_S * 1000;
    for (let elapsed = 0; elapsed < durationMs; elapsed = performance.now() - start) {
      const due = Math.floor((elapsed / 1000) * rate);
      while (produced < due) {
        const job = newJob(produced++);
        // Submit time: when the API would call enqueue; the wake-up follows the commit, as in runs.ts.
        submittedAt.set(job.id, performance.now());
        const p = store.enqueue(job).then(() => {
          events.emit("work");
        });
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await sleep(1);
    }
    await Promise.all(inFlight);
    const achievedRate = produced / ((performance.now() - start) / 1000);
    producing = false;
    events.emit("work");
    await Promise.all(workers);
    if (latencies.length !== produced)
      throw new Error(`${dialect}: ${latencies.length} of ${produced} claimed`);
    return latencyRun(latencies, achievedRate);
  } finally {
    producing = false;
    await cleanup();
  }
}

// ---------------------------------------------------------------------------------------------------

interface ThroughputSummary {
  jobs_per_s: Spread;
  enqueue_jobs_per_s: Spread | null;
}

async function throughputSeries(
  label: string,
  run: (batch: number) => Promise<ThroughputRun>,
): Promise<Record<string, ThroughputSummary>> {
  const out: Record<string, ThroughputSummary> = {};
  for (const batch of BATCHES) {
    const runs: ThroughputRun[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const r = await run(batch);
      progress(
        `${label} batch ${batch} rep ${rep + 1}/${REPS}: ${Math.round(r.jobsPerS)} jobs/s${r.enqueuePerS === null ? "" : ` (enqueue ${Math.round(r.enqueuePerS)}/s)`}`,
      );
      runs.push(r);
    }
    out[`batch_${batch}`] = {
      jobs_per_s: spread(
        runs.map((r) => r.jobsPerS),
        0,
      ),
      enqueue_jobs_per_s: runs.every((r) => r.enqueuePerS !== null)
        ? spread(
            runs.map((r) => r.enqueuePerS!),
            0,
          )
        : null,
    };
  }
  return out;
}

async function dialectSection(dialect: Dialect) {
  const started = performance.now();
  const throughput = await throughputSeries(dialect, (batch) => hangarThroughput(dialect, batch));
  const batch1 = throughput[`batch_${BATCHES[0]}`]!.jobs_per_s.median;
  const rate = Math.max(1, Math.min(Math.round(batch1 / 2), LATENCY_MAX_RATE));
  const runs: LatencyRun[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const r = await hangarLatency(dialect, rate);
    progress(
      `${dialect} latency at ${rate}/s rep ${rep + 1}/${REPS}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms`,
    );
    runs.push(r);
  }
  return {
    setup:
      dialect === "sqlite"
        ? `one store (one connection, as one server process has) shared by ${WORKERS} concurrent async worker loops`
        : `one store (pg pool of 10, as one server process has) shared by ${WORKERS} concurrent async worker loops`,
    throughput,
    latency: {
      target_rate_per_s: rate,
      rate_rule: `half the batch-${BATCHES[0]} median throughput, capped at ${LATENCY_MAX_RATE}/s`,
      duration_s: LATENCY_S,
      ...latencySpreads(runs),
      jobs_per_run: runs.map((r) => r.jobs),
      claims_over_200ms: runs.map((r) => r.over200ms),
    },
    seconds: secondsSince(started),
  };
}

/** Creates the scratch database (or falls back to schemas in the given one); null when reachable. */
async function preparePostgres(): Promise<string | null> {
  try {
    await adminQuery("select 1", SERVER_URL);
  } catch (error) {
    return `PostgreSQL at ${SERVER_URL.replace(/\/\/[^@]*@/, "//…@")} is not reachable: ${(error as Error).message}`;
  }
  const name = schemaName("hangar_bench");
  try {
    await adminQuery(`create database ${name}`, SERVER_URL);
    scratchDatabase = name;
    const url = new URL(SERVER_URL);
    url.pathname = `/${name}`;
    DATABASE_URL = url.toString();
    const drop = async () => {
      cleanups.delete(drop);
      await adminQuery(`drop database if exists ${name} with (force)`, SERVER_URL);
    };
    cleanups.add(drop);
  } catch (error) {
    progress(
      `cannot create a scratch database (${(error as Error).message}); using schemas in the given one`,
    );
  }
  return null;
}

interface PeerSection {
  version: string;
  setup: string;
  throughput: Record<string, ThroughputSummary>;
  latency: {
    rate_per_s: number;
    submit_to_claim_ms: { p50: Spread; p99: Spread; max: Spread };
    achieved_rate_per_s: Spread;
  };
  seconds: number;
}

/** Each reference queue through the same loops; latency at `rate`, the rate Hangar on PostgreSQL was measured at. */
async function peerSections(rate: number): Promise<Record<string, PeerSection | { skipped: string }>> {
  const out: Record<string, PeerSection | { skipped: string }> = {};
  const missing = ensureBenchPackages();
  for (const { name, open } of QUEUE_PEERS) {
    if (missing) {
      out[name] = { skipped: missing };
      continue;
    }
    const started = performance.now();
    try {
      const peer = await open({ postgresUrl: DATABASE_URL, redisUrl: REDIS_URL });
      try {
        const throughput = await throughputSeries(name, async (batch) => ({
          enqueuePerS: null,
          jobsPerS: await peer.throughput(JOBS, WORKERS, batch),
        }));
        const runs: LatencyRun[] = [];
        for (let rep = 0; rep < REPS; rep++) {
          const r = await peer.latency(rate, LATENCY_S, WORKERS);
          progress(
            `${name} latency at ${rate}/s rep ${rep + 1}/${REPS}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`,
          );
          runs.push(r);
        }
        out[name] = {
          version: peer.version,
          setup: peer.setup.replaceAll("W ", `${WORKERS} `),
          throughput,
          latency: {
            rate_per_s: rate,
            ...latencySpreads(runs),
          },
          seconds: secondsSince(started),
        };
      } finally {
        await peer.close();
      }
    } catch (error) {
      progress(`${name} failed: ${(error as Error).message}`);
      out[name] = { skipped: `failed: ${(error as Error).message}` };
    }
  }
  return out;
}

type Section = Awaited<ReturnType<typeof dialectSection>>;

function bestOf(section: Section | { skipped: string }): number | null {
  if ("skipped" in section) return null;
  return Math.max(...Object.values(section.throughput).map((t) => t.jobs_per_s.median));
}

async function main() {
  const started = performance.now();
  const host = machine();
  progress(
    `scheduler bench: ${JOBS} jobs, ${WORKERS} workers, batches ${BATCHES.join("/")}, ${REPS} reps, latency ${LATENCY_S} s`,
  );
  const sqlite = await dialectSection("sqlite");
  const unreachable = await preparePostgres();
  const postgres: Section | { skipped: string } = unreachable
    ? { skipped: unreachable }
    : await dialectSection("postgres");
  const peerRate =
    "latency" in postgres ? postgres.latency.target_rate_per_s : sqlite.latency.target_rate_per_s;
  const peers = unreachable || args["no-peers"] ? {} : await peerSections(peerRate);

  // Hangar on PostgreSQL over each peer: throughput ratio per batch size (above 1: Hangar is faster).
  const ratios: Record<string, Record<string, number | null>> = {};
  for (const [name, peer] of Object.entries(peers)) {
    const byBatch: Record<string, number | null> = {};
    for (const batch of BATCHES) {
      const key = `batch_${batch}`;
      const theirs = "throughput" in peer ? peer.throughput[key]?.jobs_per_s.median : undefined;
      const ours = "throughput" in postgres ? postgres.throughput[key]?.jobs_per_s.median : undefined;
      byBatch[`hangar_postgres_over_peer_${key}`] = theirs && ours ? round(ours / theirs, 2) : null;
      const sqliteOurs = sqlite.throughput[key]?.jobs_per_s.median;
      byBatch[`hangar_sqlite_over_peer_${key}`] = theirs && sqliteOurs ? round(sqliteOurs / theirs, 2) : null;
    }
    ratios[name] = byBatch;
  }

  const perDialect = (section: Section | { skipped: string }) => {
    const best = bestOf(section);
    const byBatch: Record<string, boolean> = {};
    if (!("skipped" in section)) {
      for (const [key, t] of Object.entries(section.throughput))
        byBatch[key] = t.jobs_per_s.median >= TARGET_JOBS_PER_S;
    }
    return {
      best_median_jobs_per_s: best,
      met: best !== null && best >= TARGET_JOBS_PER_S,
      by_batch: byBatch,
    };
  };
  const sqliteTarget = perDialect(sqlite);
  const postgresTarget = perDialect(postgres);
  const result = {
    benchmark: "scheduler",
    machine: { ...host, load_average_end: machine().load_average },
    params: {
      jobs: JOBS,
      workers: WORKERS,
      batches: BATCHES,
      reps: REPS,
      enqueue_concurrency: ENQUEUE_CONCURRENCY,
      postgres_database: scratchDatabase
        ? "a scratch database created for this run and dropped after it"
        : "schemas in the given database",
      fallback_poll_ms: FALLBACK_POLL_MS,
      notes: [
        "throughput = jobs / (first claim → last finish); the queue is filled beforehand (enqueue rate reported separately)",
        "Hangar finishes each claimed job with its own finish() call (concurrently within a batch); pg-boss completes a batch in one call; Graphile Worker and BullMQ run W × batch jobs at once with their own workers",
        `Hangar claims with fair share on, over jobs of ${ORGS.length} orgs`,
        `peers' latency runs at Hangar PostgreSQL's rate, ${SETTLE_MS} ms after their workers start`,
        "latency = performance.now() after claim() returns − performance.now() just before enqueue(), same process",
        "figures are median of reps with min/max; fresh SQLite file / PostgreSQL schema per measurement",
      ],
    },
    sqlite,
    postgres,
    peers,
    ratios,
    targets: {
      throughput_jobs_per_s: TARGET_JOBS_PER_S,
      rule: "met when the median at the best measured batch size reaches the target",
      sqlite: sqliteTarget,
      postgres: postgresTarget,
      met: sqliteTarget.met && postgresTarget.met,
    },
    seconds: secondsSince(started),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

async function cleanupAll() {
  for (const cleanup of [...cleanups].reverse())
    await cleanup().catch((e: Error) => progress(`cleanup failed: ${e.message}`));
}

process.once("SIGINT", () => {
  progress("interrupted: cleaning up");
  void cleanupAll().finally(() => process.exit(130));
});

try {
  await main();
} catch (error) {
  progress(`failed: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
