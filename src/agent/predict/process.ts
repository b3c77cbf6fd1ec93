import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { CommandSpec, ProcessExit } from "../../models/model.ts";
import { AGENT_PID_ENV } from "../child-env.ts";

const STDERR_TAIL_LINES = 20;
const KILL_GRACE_MS = 5_000;

/**
 * Runs one model process to its end: every output line goes to `onLine`, the last stderr lines come
 * back for error messages, and `signal` stops it (SIGTERM, then SIGKILL after a grace period). The
 * process gets its own process group so that a model's helper processes stop with it, and carries
 * the agent's pid so that it stops with the agent too (see AGENT_PID_ENV).
 */
export async function runModelProcess(
  command: CommandSpec,
  options: {
    /** The model's environment (see `modelEnv`); the command's own variables go on top. */
    env: NodeJS.ProcessEnv;
    signal: AbortSignal;
    onLine: (stream: "stdout" | "stderr", line: string) => void;
  },
): Promise<ProcessExit> {
  const [executable, ...args] = command.argv;
  const child = spawn(executable!, args, {
    cwd: command.cwd,
    env: { ...options.env, ...command.env, [AGENT_PID_ENV]: String(process.pid) },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const tail: string[] = [];
  createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
    options.onLine("stdout", line),
  );
  createInterface({ input: child.stderr, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
    tail.push(line);
    if (tail.length > STDERR_TAIL_LINES) tail.shift();
    options.onLine("stderr", line);
  });
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      /* already gone */
    }
  };
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    killGroup("SIGTERM");
    killTimer = setTimeout(() => killGroup("SIGKILL"), KILL_GRACE_MS);
  };
  if (options.signal.aborted) onAbort();
  else options.signal.addEventListener("abort", onAbort, { once: true });
  let spawnError: Error | undefined;
  child.once("error", (error) => {
    spawnError = error;
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((done) => {
    child.once("close", (exitCode, exitSignal) => done([exitCode, exitSignal]));
  });
  options.signal.removeEventListener("abort", onAbort);
  clearTimeout(killTimer);
  if (spawnError) tail.push(`could not start ${executable}: ${spawnError.message}`);
  return { code, signal, stderrTail: tail.join("\n") };
}
