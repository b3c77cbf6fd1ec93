/**
 * The queues people would otherwise pick, driven through the same two loops as Hangar's scheduler in
 * bench/scheduler.ts: claim→complete throughput of trivial jobs, and submit→claim latency at a fixed
 * rate. pg-boss, Graphile Worker and BullMQ (Redis, and the PostgreSQL backend BullMQ 6 ships) come
 * from bench/node_modules (bench/package.json), installed for the benchmark only; their APIs are
 * typed here as far as this file uses them (checked against each package's own .d.ts), because they
 * are not dependencies of Hangar and a fresh clone has no types for them.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { percentile, progress, spread } from "./lib.ts";

const BENCH_DIR = import.meta.dirname;
/** Between starting a peer's workers and the first job of a latency run. */
export const SETTLE_MS = 500;

export interface LatencyRun {
  jobs: number;
  achievedRate: number;
  p50: number;
  p99: number;
  max: number;
  /** Claims that took longer than 200 ms (a missed wake-up or a poll). */
  over200ms: number;
}

/** One latency run's figures from its claim latencies (ms, any order). */
export function latencyRun(latencies: number[], achievedRate: number): LatencyRun {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    jobs: sorted.length,
    achievedRate,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
    over200ms: sorted.filter((l) => l > 200).length,
  };
}

/** The repetitions of a latency measurement as medians with their spread. */
export const latencySpreads = (runs: LatencyRun[]) => ({
  achieved_rate_per_s: spread(
    runs.map((r) => r.achievedRate),
    0,
  ),
  submit_to_claim_ms: {
    p50: spread(
      runs.map((r) => r.p50),
      2,
    ),
    p99: spread(
      runs.map((r) => r.p99),
      2,
    ),
    max: spread(
      runs.map((r) => r.max),
      2,
    ),
  },
});

export interface QueuePeer {
  name: string;
  version: string;
  setup: string;
  /** Jobs per second from the first claim to the last completion of `jobs` queued jobs. */
  throughput(jobs: number, workers: number, batch: number): Promise<number>;
  latency(rate: number, seconds: number, workers: number): Promise<LatencyRun>;
  close(): Promise<void>;
}

export interface PeerTargets {
  /** A database of the run's own (peers create their schemas in it). */
  postgresUrl: string;
  redisUrl: string;
}

/** bench/node_modules, installed from bench/package-lock.json when a package is missing. */
export function ensureBenchPackages(): string | null {
  const wanted = ["pg-boss", "graphile-worker", "bullmq", "ioredis", "autocannon"];
  if (wanted.every((name) => existsSync(join(BENCH_DIR, "node_modules", name, "package.json")))) return null;
  progress("the reference queues are not installed in bench/node_modules: running npm ci --prefix bench");
  try {
    execFileSync("npm", ["ci", "--prefix", BENCH_DIR, "--no-audit", "--no-fund"], {
      stdio: ["ignore", process.stderr, process.stderr],
    });
    return null;
  } catch (error) {
    return `"npm ci --prefix bench" failed (${(error as Error).message}); run it by hand`;
  }
}

const versionOf = (name: string): string =>
  (
    JSON.parse(readFileSync(join(BENCH_DIR, "node_modules", name, "package.json"), "utf8")) as {
      version: string;
    }
  ).version;

/** A variable specifier keeps TypeScript from resolving packages a fresh clone has not installed. */
export const importBenchPackage = (name: string): Promise<unknown> => import(name);

const uniqueName = (prefix: string) =>
  `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;

/** Resolves once `count` calls to the returned tick have happened. */
function countdown(count: number): { tick(): void; done: Promise<void> } {
  let left = count;
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  if (count === 0) resolve();
  return {
    tick() {
      if (--left === 0) resolve();
    },
    done,
  };
}

/**
 * The latency loop every peer shares: `add(i)` at `rate` per second for `seconds`; the peer's worker
 * calls `claimed(i)` as its handler starts. Latency = handler start − just before add(i).
 */
async function pacedLatency(
  rate: number,
  seconds: number,
  start: (
    claimed: (i: number) => void,
  ) => Promise<{ add(i: number): Promise<unknown>; stop(): Promise<void> }>,
): Promise<LatencyRun> {
  const submittedAt: number[] = [];
  const latencies: number[] = [];
  let expected = Number.POSITIVE_INFINITY;
  let allClaimed!: () => void;
  const finished = new Promise<void>((resolve) => {
    allClaimed = resolve;
  });
  const peer = await start((i) => {
    latencies.push(performance.now() - submittedAt[i]!);
    if (latencies.length >= expected) allClaimed();
  });
  try {
    // Workers that subscribe (LISTEN, blocking pops) get to finish connecting, as a deployed worker has.
    await sleep(SETTLE_MS);
    const inFlight = new Set<Promise<unknown>>();
    let produced = 0;
    const began = performance.now();
    for (let elapsed = 0; elapsed < seconds * 1000; elapsed = performance.now() - began) {
      const due = Math.floor((elapsed / 1000) * rate);
      while (produced < due) {
        const i = produced++;
        submittedAt[i] = performance.now();
        const p = peer.add(i);
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await sleep(1);
    }
    await Promise.all(inFlight);
    const achievedRate = produced / ((performance.now() - began) / 1000);
    expected = produced;
    if (latencies.length >= expected) allClaimed();
    await Promise.race([
      finished,
      sleep(30_000).then(() => {
        throw new Error(`${latencies.length} of ${produced} jobs claimed within 30 s`);
      }),
    ]);
    return latencyRun(latencies, achievedRate);
  } finally {
    await peer.stop();
  }
}

// ---------------------------------------------------------------------------------------------------
// pg-boss: insert + fetch({batchSize}) + complete(ids) for throughput, work() for latency.

/** The part of pg-boss 12's API used here (dist/index.d.ts). */
interface PgBoss {
  on(event: "error", listener: (error: Error) => void): unknown;
  start(): Promise<unknown>;
  stop(options?: { graceful?: boolean; wait?: boolean; close?: boolean }): Promise<void>;
  createQueue(name: string): Promise<void>;
  deleteQueue(name: string): Promise<void>;
  insert(name: string, jobs: { data?: object }[]): Promise<unknown>;
  send(name: string, data: object): Promise<string | null>;
  fetch(name: string, options?: { batchSize?: number }): Promise<{ id: string }[]>;
  complete(name: string, id: string | string[]): Promise<unknown>;
  work(
    name: string,
    options: { pollingIntervalSeconds?: number; batchSize?: number },
    handler: (jobs: { data: { i: number } }[]) => Promise<void>,
  ): Promise<string>;
  offWork(name: string): Promise<void>;
}

async function pgBoss({ postgresUrl }: PeerTargets): Promise<QueuePeer> {
  const { PgBoss } = (await importBenchPackage("pg-boss")) as {
    PgBoss: new (options: Record<string, unknown>) => PgBoss;
  };
  const schema = uniqueName("bench_pgboss");
  const boss = new PgBoss({
    connectionString: postgresUrl,
    schema,
    max: 10,
    // Only the queue path is measured; Hangar's bench runs no maintenance loops either.
    supervise: false,
    schedule: false,
    registerInstance: false,
  });
  boss.on("error", (error) => progress(`pg-boss error: ${error.message}`));
  await boss.start();
  return {
    name: "pg-boss",
    version: versionOf("pg-boss"),
    setup:
      "one PgBoss (pool of 10, supervise/schedule off); queue filled with insert() in chunks of 1,000; W loops of fetch({batchSize}) then one complete(ids) per batch; latency: send() one at a time, W work() loops with the shortest polling interval (0.5 s) and batchSize 50 (batchSize 1 cannot keep up: one job per poll)",
    async throughput(jobs, workers, batch) {
      const queue = uniqueName("throughput");
      await boss.createQueue(queue);
      try {
        for (let i = 0; i < jobs; i += 1000) {
          const chunk = Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({ data: { i: i + k } }));
          await boss.insert(queue, chunk);
        }
        let claimed = 0;
        const start = performance.now();
        await Promise.all(
          Array.from({ length: workers }, async () => {
            for (;;) {
              const fetched = await boss.fetch(queue, { batchSize: batch });
              claimed += fetched.length;
              if (fetched.length === 0) {
                if (claimed >= jobs) return;
                await sleep(1);
                continue;
              }
              await boss.complete(
                queue,
                fetched.map((j) => j.id),
              );
            }
          }),
        );
        return jobs / ((performance.now() - start) / 1000);
      } finally {
        await boss.deleteQueue(queue).catch(() => undefined);
      }
    },
    async latency(rate, seconds, workers) {
      const queue = uniqueName("latency");
      await boss.createQueue(queue);
      try {
        return await pacedLatency(rate, seconds, async (claimed) => {
          for (let w = 0; w < workers; w++) {
            await boss.work(queue, { pollingIntervalSeconds: 0.5, batchSize: 50 }, async (jobs) => {
              for (const job of jobs) claimed(job.data.i);
            });
          }
          return { add: (i) => boss.send(queue, { i }), stop: () => boss.offWork(queue) };
        });
      } finally {
        await boss.deleteQueue(queue).catch(() => undefined);
      }
    },
    async close() {
      await boss.stop({ graceful: false, wait: true, close: true }).catch(() => undefined);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Graphile Worker: addJobs() to fill, run() with a no-op task; batch > 1 turns on its local queue
// (batched fetch) and batched completion, the documented way to raise its throughput.

interface GraphileRunner {
  stop(): Promise<void>;
  addJob(identifier: string, payload: object): Promise<unknown>;
  events: { on(event: "job:complete", listener: () => void): unknown };
}
interface GraphileWorker {
  run(options: Record<string, unknown>): Promise<GraphileRunner>;
  makeWorkerUtils(options: Record<string, unknown>): Promise<{
    migrate(): Promise<void>;
    addJobs(specs: { identifier: string; payload: object }[]): Promise<unknown>;
    release(): Promise<void>;
  }>;
  Logger: new (factory: () => () => void) => unknown;
}

async function graphileWorker({ postgresUrl }: PeerTargets): Promise<QueuePeer> {
  const graphile = (await importBenchPackage("graphile-worker")) as GraphileWorker;
  const silent = new graphile.Logger(() => () => undefined);
  const schema = uniqueName("bench_graphile");
  const utils = await graphile.makeWorkerUtils({ connectionString: postgresUrl, schema, logger: silent });
  await utils.migrate();
  const runnerOptions = (concurrency: number, batch: number, taskList: Record<string, unknown>) => ({
    connectionString: postgresUrl,
    schema,
    concurrency,
    maxPoolSize: 10,
    noHandleSignals: true,
    logger: silent,
    taskList,
    ...(batch > 1 ? { preset: { worker: { localQueue: { size: batch }, completeJobBatchDelay: 0 } } } : {}),
  });
  return {
    name: "Graphile Worker",
    version: versionOf("graphile-worker"),
    setup:
      "queue filled with addJobs() in chunks of 1,000; one run() with concurrency W × batch and a no-op task (pool of 10); batch > 1 sets localQueue.size = batch and completeJobBatchDelay = 0; latency: addJob() one at a time, concurrency W, LISTEN/NOTIFY wake-ups",
    async throughput(jobs, workers, batch) {
      const task = uniqueName("noop");
      for (let i = 0; i < jobs; i += 1000) {
        const chunk = Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({
          identifier: task,
          payload: { i: i + k },
        }));
        await utils.addJobs(chunk);
      }
      const completed = countdown(jobs);
      const start = performance.now();
      const runner = await graphile.run(
        runnerOptions(workers * batch, batch, { [task]: async () => undefined }),
      );
      runner.events.on("job:complete", completed.tick);
      try {
        await completed.done;
        return jobs / ((performance.now() - start) / 1000);
      } finally {
        await runner.stop();
      }
    },
    latency(rate, seconds, workers) {
      const task = uniqueName("noop");
      return pacedLatency(rate, seconds, async (claimed) => {
        const runner = await graphile.run(
          runnerOptions(workers, 1, {
            [task]: async (payload: { i: number }) => {
              claimed(payload.i);
            },
          }),
        );
        return { add: (i) => runner.addJob(task, { i }), stop: () => runner.stop() };
      });
    },
    async close() {
      await utils.release();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// BullMQ: addBulk() to fill, a Worker with concurrency W × batch (its open-source worker fetches one
// job at a time; batches are a paid feature), on Redis or on its PostgreSQL backend.

interface BullQueue {
  addBulk(jobs: { name: string; data: object }[]): Promise<unknown>;
  add(name: string, data: object): Promise<unknown>;
  obliterate(options: { force: boolean }): Promise<void>;
  close(): Promise<void>;
}
interface BullWorker {
  on(event: "completed" | "error", listener: (arg?: unknown) => void): unknown;
  close(): Promise<void>;
}
type BackendFactory = unknown;
interface BullMq {
  Queue: new (name: string, options: Record<string, unknown>, backend?: BackendFactory) => BullQueue;
  Worker: new (
    name: string,
    processor: (job: { data: { i: number } }) => Promise<void>,
    options: Record<string, unknown>,
    backend?: BackendFactory,
  ) => BullWorker;
  createPostgresBackend: BackendFactory;
}

async function bullMq(
  backend: "redis" | "postgres",
  { postgresUrl, redisUrl }: PeerTargets,
): Promise<QueuePeer> {
  const bull = (await importBenchPackage("bullmq")) as BullMq;
  const redis = new URL(redisUrl);
  const schema = uniqueName("bench_bullmq");
  const connection =
    backend === "redis"
      ? { host: redis.hostname, port: Number(redis.port || 6379), maxRetriesPerRequest: null }
      : { connectionString: postgresUrl, schema, max: 10, migrate: true };
  const factory = backend === "postgres" ? bull.createPostgresBackend : undefined;
  const open = (name: string) => new bull.Queue(name, { connection, prefix: "hangar-bench" }, factory);
  const worker = (
    name: string,
    concurrency: number,
    processor: (job: { data: { i: number } }) => Promise<void>,
  ) => {
    const w = new bull.Worker(name, processor, { connection, concurrency, prefix: "hangar-bench" }, factory);
    w.on("error", (error) => progress(`BullMQ (${backend}) worker error: ${(error as Error).message}`));
    return w;
  };
  const dispose = async (queue: BullQueue) => {
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  };
  return {
    name: `BullMQ (${backend === "redis" ? "Redis" : "PostgreSQL"})`,
    version: versionOf("bullmq"),
    setup: `queue filled with addBulk() in chunks of 1,000; one Worker with concurrency W × batch and a no-op processor, completed jobs kept (the default)${backend === "postgres" ? ", on createPostgresBackend (pool of 10, a schema of its own)" : ", on the same Redis"}; latency: add() one at a time, concurrency W`,
    async throughput(jobs, workers, batch) {
      const name = uniqueName("throughput");
      const queue = open(name);
      try {
        for (let i = 0; i < jobs; i += 1000) {
          await queue.addBulk(
            Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({
              name: "noop",
              data: { i: i + k },
            })),
          );
        }
        const completed = countdown(jobs);
        const start = performance.now();
        const consumer = worker(name, workers * batch, async () => undefined);
        consumer.on("completed", completed.tick);
        try {
          await completed.done;
          return jobs / ((performance.now() - start) / 1000);
        } finally {
          await consumer.close();
        }
      } finally {
        await dispose(queue);
      }
    },
    async latency(rate, seconds, workers) {
      const name = uniqueName("latency");
      const queue = open(name);
      try {
        return await pacedLatency(rate, seconds, async (claimed) => {
          const consumer = worker(name, workers, async (job) => {
            claimed(job.data.i);
          });
          return { add: (i) => queue.add("noop", { i }), stop: () => consumer.close() };
        });
      } finally {
        await dispose(queue);
      }
    },
    async close() {
      if (backend === "postgres") {
        const pg = (await import("pg")).default;
        const client = new pg.Client({ connectionString: postgresUrl });
        await client.connect();
        await client.query(`drop schema if exists ${schema} cascade`).finally(() => client.end());
      }
    },
  };
}

/** Every reference queue, in report order; a peer that cannot start is reported as skipped. */
export const QUEUE_PEERS: { name: string; open(targets: PeerTargets): Promise<QueuePeer> }[] = [
  { name: "pg-boss", open: pgBoss },
  { name: "Graphile Worker", open: graphileWorker },
  { name: "BullMQ (Redis)", open: (targets) => bullMq("redis", targets) },
  { name: "BullMQ (PostgreSQL)", open: (targets) => bullMq("postgres", targets) },
];
