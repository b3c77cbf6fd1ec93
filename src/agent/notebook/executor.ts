import { spawn } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import type { JsonValue } from "../../domain/json.ts";
import { childEnv } from "../child-env.ts";
import { runnerScriptPath } from "./runner-script.ts";

/** Events of run_notebook.py (one JSON object per stdout line), plus the runner's own stderr lines. */
export type NotebookEvent =
  | { event: "start"; total_cells: number }
  | { event: "cell_start"; index: number; total: number }
  | { event: "cell_end"; index: number; total: number; status: "completed" | "failed"; duration: number }
  /** Kernel output, forwarded while the cell is still running. */
  | { event: "stream"; index: number; name: "stdout" | "stderr"; text: string }
  | { event: "warning"; message: string }
  | {
      event: "error";
      code: "cell_error" | "timeout" | "kernel_error";
      cell_index: number;
      execution_count: number | null;
      ename: string;
      evalue: string;
      traceback: string[];
    }
  | { event: "end"; status: "completed" | "failed" | "cancelled" }
  /** Nothing could be run (bad notebook, parameters or arguments, kernel did not start); replaces "end". */
  | { event: "fatal"; code: string; message: string }
  /** Runner diagnostics: a stderr line, or a stdout line that was not an event. */
  | { event: "runner_stderr"; text: string };

export type NotebookErrorCode =
  | "cell_error"
  | "timeout"
  | "kernel_error"
  | "invalid_notebook"
  | "invalid_parameters"
  | "runner_crashed";

export interface NotebookError {
  code: NotebookErrorCode;
  message: string;
  /** 0-based index in the executed notebook, before papermill's two error banner cells are inserted. */
  cell_index?: number;
  execution_count?: number | null;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}

export type NotebookOutcome =
  | { status: "succeeded" }
  | { status: "failed"; error: NotebookError }
  | { status: "cancelled" };

export interface NotebookExecution {
  notebookPath: string;
  outputNotebookPath: string;
  parameters: Record<string, JsonValue>;
  workDir: string;
  /**
   * Merged onto process.env for the runner and thus the kernel, e.g. HANGAR_INPUT_DIR/HANGAR_OUTPUT_DIR.
   * The agent's own HANGAR_* settings (its tokens among them) are dropped first: notebooks never see them.
   */
  env: Record<string, string>;
  /** Interpreter with nbclient/nbformat/ipykernel, e.g. /usr/bin/python3 or HANGAR_PYTHON. */
  pythonPath: string;
  /** Defaults to the notebook's kernelspec, then python3. */
  kernelName?: string;
  /** No per-cell limit when absent. */
  cellTimeoutSeconds?: number;
  startupTimeoutSeconds?: number;
  /** Abort sends SIGTERM to the runner (it shuts the kernel down and saves), then SIGKILL after 5 s. */
  signal?: AbortSignal;
  /** Called synchronously for each event; must not throw. */
  onEvent?: (event: NotebookEvent) => void;
}

const KILL_GRACE_MS = 5_000;
const STDERR_TAIL_LINES = 20;
const FATAL_CODES = new Set<string>(["invalid_notebook", "invalid_parameters", "kernel_error"]);
const EVENT_NAMES = new Set<string>([
  "start",
  "cell_start",
  "cell_end",
  "stream",
  "warning",
  "error",
  "end",
  "fatal",
]);

type ErrorEvent = Extract<NotebookEvent, { event: "error" }>;

interface RunState {
  aborted: boolean;
  end?: Extract<NotebookEvent, { event: "end" }>["status"];
  fatal?: Extract<NotebookEvent, { event: "fatal" }>;
  error?: ErrorEvent;
  spawnError?: Error;
  stderrTail: string[];
}

/** Runs a notebook papermill-style with run_notebook.py; resolves (never rejects) with how it went. */
export async function executeNotebook(exec: NotebookExecution): Promise<NotebookOutcome> {
  if (exec.signal?.aborted) return { status: "cancelled" };
  const script = await runnerScriptPath();
  // Beside the output rather than in /tmp: an agent killed mid-run leaves it in its own work dir.
  const parametersPath = `${resolve(exec.outputNotebookPath)}.parameters.json`;
  try {
    await writeFile(parametersPath, JSON.stringify(exec.parameters));
    // Absolute paths: the runner's cwd is the work dir, not ours.
    const args = [
      script,
      "--input",
      resolve(exec.notebookPath),
      "--output",
      resolve(exec.outputNotebookPath),
      "--parameters",
      parametersPath,
      "--cwd",
      resolve(exec.workDir),
    ];
    if (exec.kernelName) args.push("--kernel", exec.kernelName);
    if (exec.cellTimeoutSeconds !== undefined) {
      args.push("--timeout-per-cell", String(Math.max(1, Math.ceil(exec.cellTimeoutSeconds))));
    }
    if (exec.startupTimeoutSeconds !== undefined) {
      args.push("--startup-timeout", String(Math.max(1, Math.ceil(exec.startupTimeoutSeconds))));
    }
    if (exec.signal?.aborted) return { status: "cancelled" };
    return await runRunner(exec, args);
  } finally {
    await rm(parametersPath, { force: true });
  }
}

async function runRunner(exec: NotebookExecution, args: string[]): Promise<NotebookOutcome> {
  const state: RunState = { aborted: false, stderrTail: [] };
  const emit = (event: NotebookEvent) => exec.onEvent?.(event);
  const child = spawn(exec.pythonPath, args, {
    cwd: resolve(exec.workDir),
    env: childEnv(process.env, exec.env),
    stdio: ["ignore", "pipe", "pipe"],
  });

  // readline reassembles lines split across chunks and flushes a final unterminated one.
  createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
    const event = parseEvent(line);
    if (event === undefined) {
      if (line.trim() !== "") emit({ event: "runner_stderr", text: line });
      return;
    }
    if (event.event === "end") state.end = event.status;
    else if (event.event === "fatal") state.fatal = event;
    else if (event.event === "error") state.error = event;
    emit(event);
  });
  createInterface({ input: child.stderr, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
    state.stderrTail.push(line);
    if (state.stderrTail.length > STDERR_TAIL_LINES) state.stderrTail.shift();
    emit({ event: "runner_stderr", text: line });
  });

  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    state.aborted = true;
    child.kill("SIGTERM");
    killTimer = setTimeout(() => child.kill("SIGKILL"), KILL_GRACE_MS);
  };
  exec.signal?.addEventListener("abort", onAbort, { once: true });

  // "close" follows "error" when spawning fails, and comes after stdout/stderr have ended.
  child.once("error", (err) => {
    state.spawnError = err;
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((done) => {
    child.once("close", (exitCode, exitSignal) => done([exitCode, exitSignal]));
  });
  exec.signal?.removeEventListener("abort", onAbort);
  clearTimeout(killTimer);
  return outcomeOf(state, code, signal, exec.cellTimeoutSeconds);
}

function parseEvent(line: string): NotebookEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || !("event" in value)) return undefined;
  if (typeof value.event !== "string" || !EVENT_NAMES.has(value.event)) return undefined;
  // The runner is ours; checking the discriminant is enough.
  return value as NotebookEvent;
}

function outcomeOf(
  state: RunState,
  code: number | null,
  signal: NodeJS.Signals | null,
  cellTimeoutSeconds: number | undefined,
): NotebookOutcome {
  if (state.fatal) {
    const fatalCode = FATAL_CODES.has(state.fatal.code)
      ? (state.fatal.code as NotebookErrorCode)
      : "runner_crashed";
    return { status: "failed", error: { code: fatalCode, message: state.fatal.message } };
  }
  if (state.end === "completed") return { status: "succeeded" };
  if (state.end === "cancelled" || (state.aborted && state.end === undefined)) return { status: "cancelled" };
  if (state.end === "failed" && state.error) {
    return { status: "failed", error: cellFailure(state.error, cellTimeoutSeconds) };
  }
  return { status: "failed", error: { code: "runner_crashed", message: crashMessage(state, code, signal) } };
}

function cellFailure(error: ErrorEvent, cellTimeoutSeconds: number | undefined): NotebookError {
  const cell = `${error.cell_index}${error.execution_count == null ? "" : ` (In [${error.execution_count}])`}`;
  let message: string;
  if (error.code === "timeout") {
    message = `Cell ${cell} timed out${cellTimeoutSeconds === undefined ? "" : ` after ${cellTimeoutSeconds}s`}`;
  } else if (error.code === "kernel_error") {
    message = `Kernel died while running cell ${cell}`;
  } else {
    message = `Cell ${cell} raised ${error.ename}${error.evalue ? `: ${error.evalue}` : ""}`;
  }
  return {
    code: error.code,
    message,
    cell_index: error.cell_index,
    execution_count: error.execution_count,
    ename: error.ename,
    evalue: error.evalue,
    traceback: error.traceback,
  };
}

function crashMessage(state: RunState, code: number | null, signal: NodeJS.Signals | null): string {
  let message: string;
  if (state.spawnError) message = `Notebook runner could not be started: ${state.spawnError.message}`;
  else if (signal) message = `Notebook runner was killed by ${signal}`;
  else if (state.end === "failed") message = "Notebook runner reported a failure without an error";
  else message = `Notebook runner exited with code ${code} without finishing`;
  const tail = state.stderrTail.join("\n").trim();
  return tail ? `${message}\n${tail}` : message;
}
