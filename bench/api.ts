/**
 * The HTTP API under load: requests/s and p50/p99 latency of `GET /api/v1/runs/{id}` and of a
 * notebook run's submit (`POST /api/v1/notebooks/{id}/runs`), driven by autocannon on loopback at
 * a fixed number of connections, against a real `./hangar server` process on SQLite and on
 * PostgreSQL. The reference, in the same run: a bare Fastify process (the framework Hangar's API is
 * built on) answering the same run's JSON from memory: no auth, no database. Prints one JSON object
 * on stdout; progress goes to stderr.
 *
 *   node bench/api.ts [--seconds 10] [--connections 16] [--reps 3] [--skip-postgres]
 *
 * The org's `max_running_jobs` is set to 0 first, so submitted runs stay queued instead of starting
 * notebooks on this machine; rate limits are off (`HANGAR_*RATE_LIMIT_PER_MINUTE=0`) so the figures
 * are the server's, not the limiter's. autocannon comes from bench/node_modules (bench/package.json).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import pg from "pg";
import { HangarClient } from "../src/cli/client.ts";
import { REPO_ROOT } from "../src/server/server.ts";
import {
  machine,
  progress,
  randomPort,
  round,
  secondsSince,
  spawnHangarServer,
  spread,
  waitHealthy,
} from "./lib.ts";
import { ensureBenchPackages, importBenchPackage } from "./queue-peers.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    connections: { type: "string", default: "16" },
    reps: { type: "string", default: "3" },
    "skip-postgres": { type: "boolean", default: false },
  },
});
const SECONDS = Number(args.seconds);
const CONNECTIONS = Number(args.connections);
const REPS = Number(args.reps);
const API_KEY = "hgr_bench_api_key_0123456789";
const PG_URL = process.env.HANGAR_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** What autocannon reports that this bench uses (autocannon 8/9 README, "Results"). */
interface CannonResult {
  requests: { average: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}
type Cannon = (options: Record<string, unknown>) => Promise<CannonResult>;

interface Target {
  url: string;
  child: ChildProcess;
}

/** A real `./hangar server` with rate limits off, so the server, not the limiter, is measured. */
const hangarServer = (dir: string, env: Record<string, string>): Promise<Target> =>
  spawnHangarServer(REPO_ROOT, dir, API_KEY, {
    HANGAR_RATE_LIMIT_PER_MINUTE: "0",
    HANGAR_ORG_RATE_LIMIT_PER_MINUTE: "0",
    ...env,
  });

/** The reference: Fastify alone, serving `body` as JSON from memory on GET /ref and POST /ref. */
async function bareFastify(body: string): Promise<Target> {
  const port = randomPort();
  const script = `
    import Fastify from "fastify";
    const app = Fastify({ logger: false });
    const body = ${JSON.stringify(body)};
    app.get("/healthz", async () => ({ ok: true }));
    app.get("/ref", async (_request, reply) => reply.type("application/json").send(body));
    app.post("/ref", async (_request, reply) => reply.code(201).type("application/json").send(body));
    await app.listen({ port: ${port}, host: "127.0.0.1" });
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child, "the bare Fastify reference");
  return { url, child };
}

async function stop(target: Target): Promise<void> {
  if (target.child.exitCode !== null) return;
  target.child.kill("SIGTERM");
  await Promise.race([new Promise((resolve) => target.child.once("exit", resolve)), sleep(10_000)]);
  if (target.child.exitCode === null) target.child.kill("SIGKILL");
}

async function hammer(cannon: Cannon, title: string, options: Record<string, unknown>) {
  const result = await cannon({ connections: CONNECTIONS, duration: SECONDS, ...options });
  const refused = result.non2xx + result.errors + result.timeouts;
  progress(
    `${title}: ${Math.round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms${refused ? `, ${refused} non-2xx/errors` : ""}`,
  );
  if (refused > 0) throw new Error(`${title}: ${refused} requests were refused or failed`);
  return result;
}

const summary = (runs: CannonResult[]) => ({
  requests_per_s: spread(
    runs.map((r) => r.requests.average),
    0,
  ),
  latency_p50_ms: spread(
    runs.map((r) => r.latency.p50),
    1,
  ),
  latency_p99_ms: spread(
    runs.map((r) => r.latency.p99),
    1,
  ),
});

async function measure(cannon: Cannon, dialect: "sqlite" | "postgres") {
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-api-"));
  let schema: string | null = null;
  const env: Record<string, string> = {};
  if (dialect === "postgres") {
    schema = `bench_api_${Date.now().toString(36)}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`create schema ${schema}`).finally(() => admin.end());
    Object.assign(env, { DATABASE_URL: PG_URL, HANGAR_DATABASE_SCHEMA: schema });
  }
  const server = await hangarServer(dir, env);
  let reference: Target | null = null;
  try {
    const client = new HangarClient(server.url, API_KEY);
    const headers = { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" };
    const limited = await fetch(`${server.url}/api/v1/orgs/org_default`, {
      method: "PATCH",
      headers,
      body: JSON.stringify({ max_running_jobs: 0 }),
    });
    if (!limited.ok) throw new Error(`PATCH /orgs/org_default: ${limited.status} ${await limited.text()}`);
    const notebookPath = join(dir, "bench.ipynb");
    await writeFile(
      notebookPath,
      JSON.stringify({
        nbformat: 4,
        nbformat_minor: 5,
        metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
        cells: [{ cell_type: "code", metadata: {}, source: "print(1)", outputs: [], execution_count: null }],
      }),
    );
    const notebook = await client.uploadNotebook(notebookPath, "bench.ipynb");
    const submitPath = `/api/v1/notebooks/${notebook.id}/runs`;
    const submitted = await fetch(`${server.url}${submitPath}`, { method: "POST", headers, body: "{}" });
    if (submitted.status !== 201) throw new Error(`submit: ${submitted.status} ${await submitted.text()}`);
    const run = (await submitted.json()) as { id: string };
    const runPath = `/api/v1/runs/${run.id}`;
    const runBody = await (await fetch(`${server.url}${runPath}`, { headers })).text();
    reference = await bareFastify(runBody);

    const runs = {
      reference_get: [] as CannonResult[],
      get_run: [] as CannonResult[],
      reference_post: [] as CannonResult[],
      submit: [] as CannonResult[],
    };
    // Alternating, so drift in the machine's load falls on every series alike.
    for (let rep = 0; rep < REPS; rep++) {
      runs.reference_get.push(
        await hammer(cannon, `${dialect} rep ${rep + 1}: bare Fastify GET`, { url: `${reference.url}/ref` }),
      );
      runs.get_run.push(
        await hammer(cannon, `${dialect} rep ${rep + 1}: GET /runs/{id}`, {
          url: `${server.url}${runPath}`,
          headers,
        }),
      );
      runs.reference_post.push(
        await hammer(cannon, `${dialect} rep ${rep + 1}: bare Fastify POST`, {
          url: `${reference.url}/ref`,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: "{}",
        }),
      );
      runs.submit.push(
        await hammer(cannon, `${dialect} rep ${rep + 1}: POST /notebooks/{id}/runs`, {
          url: `${server.url}${submitPath}`,
          method: "POST",
          headers,
          body: "{}",
        }),
      );
    }
    const queued = (await (await fetch(`${server.url}/api/v1/runs?limit=1`, { headers })).json()) as {
      runs: { status: string }[];
    };
    if (queued.runs[0]?.status !== "queued") throw new Error("submitted runs did not stay queued");
    const median = (series: CannonResult[]) => summary(series).requests_per_s.median;
    return {
      get_run: summary(runs.get_run),
      submit: summary(runs.submit),
      reference_get: summary(runs.reference_get),
      reference_post: summary(runs.reference_post),
      ratios: {
        get_run_over_bare_fastify: round(median(runs.get_run) / median(runs.reference_get), 2),
        submit_over_bare_fastify: round(median(runs.submit) / median(runs.reference_post), 2),
      },
    };
  } finally {
    if (reference) await stop(reference);
    await stop(server);
    await rm(dir, { recursive: true, force: true });
    if (schema) {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`drop schema if exists ${schema} cascade`).finally(() => admin.end());
    }
  }
}

async function main() {
  const started = performance.now();
  const missing = ensureBenchPackages();
  if (missing) throw new Error(missing);
  const cannon = ((await importBenchPackage("autocannon")) as { default: Cannon }).default;
  const host = machine();
  const sqlite = await measure(cannon, "sqlite");
  const postgres = args["skip-postgres"] ? { skipped: "--skip-postgres" } : await measure(cannon, "postgres");
  const result = {
    benchmark: "api",
    machine: { ...host, load_average_end: machine().load_average },
    params: {
      seconds_per_series: SECONDS,
      connections: CONNECTIONS,
      reps: REPS,
      load_generator: "autocannon (in the bench process, on loopback, pipelining 1)",
      notes: [
        "series alternate within each rep: bare Fastify GET, Hangar GET /runs/{id}, bare Fastify POST, Hangar submit",
        "Hangar: a real ./hangar server process, API key auth, rate limits off, org max_running_jobs 0 so submits stay queued",
        "reference: a bare Fastify process answering the same run JSON from memory",
      ],
    },
    sqlite,
    postgres,
    seconds: secondsSince(started),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

try {
  await main();
} catch (error) {
  progress(`failed: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
}
