/**
 * A trivial notebook submitted → succeeded through a real server on the local provider, against the
 * same notebook run directly with nbclient. Prints one JSON object on stdout; progress goes to stderr.
 *
 *   node bench/notebook.ts [--reps 5]
 *
 * The server runs in this process with default settings (SQLite, scheduler interval 500 ms, idle
 * timeout 60 s), a temporary data directory and port 0. Its log is silenced because pino writes to
 * stdout; HANGAR_BENCH_LOG_LEVEL=warn shows it (mixed into stdout). The first Hangar run launches the instance
 * (agent cold start); the later ones reuse it while it is idle.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { HangarClient, type RunView } from "../src/cli/client.ts";
import { submitNotebookRun } from "../src/cli/commands.ts";
import { loadConfig } from "../src/config.ts";
import { AGENT_BUNDLE, REPO_ROOT, type RunningServer, startServer } from "../src/server/server.ts";
import { machine, progress, round, secondsSince, spread } from "./lib.ts";

const { values: args } = parseArgs({ options: { reps: { type: "string", default: "5" } } });
const REPS = Number(args.reps);
if (!Number.isInteger(REPS) || REPS < 1)
  throw new Error(`--reps must be a positive integer (got "${args.reps}")`);
const TARGET_RATIO = 1.5;
const API_KEY = "hgr_bench_key_0123456789abcdef";
/** How often the waiter re-reads the run when no in-process change event arrived. */
const FALLBACK_POLL_MS = 100;

const CELLS = ["x = 21", "y = x * 2", "print(f'answer = {y}')"];

async function writeNotebook(path: string): Promise<void> {
  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
    cells: CELLS.map((source, i) => ({
      id: `c${i}`,
      cell_type: "code",
      execution_count: null,
      metadata: {},
      outputs: [],
      source,
    })),
  };
  await writeFile(path, JSON.stringify(notebook));
}

/** nbclient on its own: interpreter start, imports, kernel start, three cells, the executed notebook saved. */
const NBCLIENT_SCRIPT = [
  "import sys, nbformat, nbclient",
  "nb = nbformat.read(sys.argv[1], as_version=4)",
  "nbclient.NotebookClient(nb, kernel_name='python3').execute()",
  "nbformat.write(nb, sys.argv[2])",
].join("\n");

async function runNbclient(python: string, notebook: string, output: string, cwd: string): Promise<number> {
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(python, ["-c", NBCLIENT_SCRIPT, notebook, output], {
      cwd,
      env: { ...process.env, PYDEVD_DISABLE_FILE_VALIDATION: "1" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`nbclient exited with ${code}: ${stderr.slice(-2000)}`)),
    );
  });
  const elapsed = performance.now() - start;
  const executed = JSON.parse(await readFile(output, "utf8")) as {
    cells: { outputs: { text?: string | string[] }[] }[];
  };
  const text =
    executed.cells
      .at(-1)
      ?.outputs.map((o) => [o.text ?? ""].flat().join(""))
      .join("") ?? "";
  if (!text.includes("answer = 42")) throw new Error(`nbclient run did not print the answer: ${text}`);
  return elapsed;
}

interface HangarRun {
  /** Client-side: before uploading the notebook → the client sees "succeeded". */
  wallMs: number;
  /** Server-side: the run's created_at → finished_at. */
  serverMs: number;
  /** The run's created_at → started_at (queue wait, including any instance launch). */
  queueMs: number;
}

/** Waits on the in-process `job:<id>` change event (the server emits it on every state change). */
async function waitSucceeded(server: RunningServer, client: HangarClient, id: string): Promise<RunView> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const changed = new Promise<void>((resolve) => {
      const timer = setTimeout(done, FALLBACK_POLL_MS);
      function done() {
        clearTimeout(timer);
        server.ctx.events.off(`job:${id}`, done);
        resolve();
      }
      server.ctx.events.on(`job:${id}`, done);
    });
    const run = await client.getRun(id);
    if (run.status === "succeeded") return run;
    if (run.status === "failed" || run.status === "cancelled") {
      throw new Error(`run ${id} ended ${run.status}: ${JSON.stringify(run.error)}`);
    }
    if (Date.now() > deadline) throw new Error(`run ${id} did not finish in time (${run.status})`);
    await changed;
  }
}

async function runHangar(server: RunningServer, client: HangarClient, notebook: string): Promise<HangarRun> {
  const start = performance.now();
  const submitted = await submitNotebookRun(client, notebook, { dataset: [], param: [] });
  const run = await waitSucceeded(server, client, submitted.id);
  const wallMs = performance.now() - start;
  const created = Date.parse(run.created_at);
  return {
    wallMs,
    serverMs: Date.parse(run.finished_at!) - created,
    queueMs: Date.parse(run.started_at!) - created,
  };
}

/** Our agents (their work dirs are under our data dir), alive and not zombies. */
async function agentPids(dataDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.includes("HANGAR_INSTANCE_ID=") && environ.includes(`HANGAR_WORK_DIR=${dataDir}`)) {
      pids.push(Number(pid));
    }
  }
  return pids;
}

/**
 * server.close() asks its agents to stop (SIGTERM); agents are detached and outlive their server by
 * design, so wait a little for them, then end any that is still running.
 */
async function endAgents(dataDir: string): Promise<number> {
  const deadline = Date.now() + 2_000;
  let pids = await agentPids(dataDir);
  while (pids.length > 0 && Date.now() < deadline) {
    await sleep(100);
    pids = await agentPids(dataDir);
  }
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  return pids.length;
}

async function main() {
  const started = performance.now();
  const host = machine();
  if (!existsSync(AGENT_BUNDLE)) {
    progress("dist/agent.mjs is missing: building it (node scripts/build.ts)");
    execFileSync(process.execPath, [join(REPO_ROOT, "scripts/build.ts")], {
      stdio: ["ignore", process.stderr, process.stderr],
    });
  }
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-nb-"));
  const dataDir = join(dir, "data");
  let server: RunningServer | undefined;
  try {
    const notebook = join(dir, "trivial.ipynb");
    await writeNotebook(notebook);
    // Defaults throughout; only what must differ for a throwaway server is overridden.
    // The server's pino logger writes to stdout, which carries our JSON: it stays silent unless asked.
    const config = loadConfig(
      { HANGAR_LOG_LEVEL: process.env.HANGAR_BENCH_LOG_LEVEL ?? "silent" },
      { dataDir, port: 0, bootstrapApiKey: API_KEY },
    );
    server = await startServer(config);
    const client = new HangarClient(server.url, API_KEY);
    progress(`server at ${server.url} (SQLite, scheduler interval ${config.schedulerIntervalMs} ms)`);

    const cold = await runHangar(server, client, notebook);
    progress(
      `hangar cold: ${Math.round(cold.wallMs)} ms (server ${cold.serverMs} ms, queued ${cold.queueMs} ms)`,
    );
    const warm: HangarRun[] = [];
    const direct: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const nb = await runNbclient(config.python, notebook, join(dir, `executed-${rep}.ipynb`), dir);
      direct.push(nb);
      const run = await runHangar(server, client, notebook);
      warm.push(run);
      progress(
        `rep ${rep + 1}/${REPS}: nbclient ${Math.round(nb)} ms, hangar warm ${Math.round(run.wallMs)} ms (server ${run.serverMs} ms, queued ${run.queueMs} ms)`,
      );
    }
    const instances = await server.ctx.store.listInstances({});

    const warmWall = spread(warm.map((r) => r.wallMs));
    const nbclient = spread(direct);
    const ratio = round(warmWall.median / nbclient.median, 2);
    const result = {
      benchmark: "notebook",
      machine: { ...host, load_average_end: machine().load_average },
      params: {
        reps: REPS,
        notebook_cells: CELLS,
        python: config.python,
        server: `in-process startServer, SQLite, local provider, defaults (scheduler interval ${config.schedulerIntervalMs} ms, idle timeout ${config.idleTimeoutS} s, heartbeat ${config.heartbeatS} s), log level ${config.logLevel}`,
        agent_bundle: { path: "dist/agent.mjs", built_at: statSync(AGENT_BUNDLE).mtime.toISOString() },
        order: "one cold Hangar run, then nbclient and warm Hangar runs alternating",
        hangar_timing:
          "wall: before submitNotebookRun (uploads the notebook, submits) → getRun says succeeded, woken by the in-process job:<id> event (100 ms fallback poll); server: created_at → finished_at",
        nbclient_timing:
          "wall around `python3 -c` that reads the notebook, NotebookClient(kernel_name='python3').execute() and writes it",
      },
      hangar: {
        cold: {
          wall_ms: round(cold.wallMs),
          server_ms: cold.serverMs,
          queued_ms: cold.queueMs,
          note: "includes launching the instance: the scheduler's provision tick, agent start and registration",
        },
        warm: {
          wall_ms: warmWall,
          server_ms: spread(warm.map((r) => r.serverMs)),
          queued_ms: spread(warm.map((r) => r.queueMs)),
        },
        instances_launched: instances.length,
      },
      nbclient: { wall_ms: nbclient },
      ratios: {
        hangar_warm_over_nbclient: ratio,
        hangar_cold_over_nbclient: round(cold.wallMs / nbclient.median, 2),
        hangar_warm_overhead_ms: round(warmWall.median - nbclient.median),
        /** Best-of-reps: less sensitive to whatever else the machine was doing. */
        hangar_warm_over_nbclient_min: round(warmWall.min / nbclient.min, 2),
      },
      targets: { hangar_warm_over_nbclient_max: TARGET_RATIO, met: ratio <= TARGET_RATIO },
      seconds: 0,
    };
    await server.close();
    server = undefined;
    result.seconds = secondsSince(started);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await server?.close().catch(() => undefined);
    const killed = await endAgents(dataDir);
    if (killed > 0) progress(`killed ${killed} agent process(es) that did not stop within 2 s`);
    await rm(dir, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  progress(`failed: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
}
