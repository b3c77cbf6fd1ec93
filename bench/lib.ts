import { type ChildProcess, spawn } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Progress goes to stderr; stdout carries only the final JSON object. */
export function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export const round = (value: number, digits = 1): number => {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
};

export interface Spread {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

/** Median with the spread of the repetitions (the machine is noisy, so one number is not enough). */
export function spread(values: number[], digits = 1): Spread {
  if (values.length === 0) throw new Error("spread() of no values");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return {
    median: round(median, digits),
    min: round(sorted[0]!, digits),
    max: round(sorted[sorted.length - 1]!, digits),
    runs: values.map((v) => round(v, digits)),
  };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function machine() {
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpu_model: cpu[0]?.model ?? "unknown",
    memory_gb: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    /** 1/5/15-minute load: anything else running on the machine skews the figures. */
    load_average: loadavg().map((l) => round(l, 2)),
  };
}

/** Seconds since `start` (a performance.now() reading), for the duration reported in the JSON. */
export const secondsSince = (start: number): number => round((performance.now() - start) / 1000, 1);

/** Waits up to 30 s for a server process's /healthz; kills it and throws when it never answers. */
export async function waitHealthy(url: string, child: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    if (
      await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return;
    await sleep(100);
  }
  child.kill("SIGKILL");
  throw new Error(`${what} did not start`);
}

export const randomPort = () => 20_000 + Math.floor(Math.random() * 20_000);

/** A real `./hangar server` process, started as users start it, so it is measured on its own. */
export async function spawnHangarServer(
  repoRoot: string,
  dir: string,
  apiKey: string,
  env: Record<string, string>,
): Promise<{ url: string; child: ChildProcess }> {
  const port = randomPort();
  const child = spawn(join(repoRoot, "hangar"), ["server"], {
    env: {
      ...process.env,
      HANGAR_PORT: String(port),
      HANGAR_DATA_DIR: dir,
      HANGAR_BOOTSTRAP_API_KEY: apiKey,
      HANGAR_LOG_LEVEL: process.env.HANGAR_BENCH_LOG_LEVEL ?? "warn",
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child, "the Hangar server");
  return { url, child };
}
