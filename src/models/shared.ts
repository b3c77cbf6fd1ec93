import { constants } from "node:fs";
import { access, mkdir, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import type { JsonObject, JsonValue } from "../domain/json.ts";
import type { ModelSpec, PredictionError, PredictionInput, PredictionResult, ProcessExit } from "./model.ts";

/** Helpers the sequence-model runners (Boltz-2, AlphaFold3) share. */

type Env = Record<string, string | undefined>;

/** Where a runner's executable comes from: an override variable, else a default name on PATH. */
export interface ExecutableSource {
  /** e.g. `HANGAR_BOLTZ_CMD`. */
  variable: string;
  /** e.g. `boltz`. */
  defaultCommand: string;
  /** How to get it, e.g. `install boltz (pip install boltz) on the instance`. */
  installHint: string;
}

async function isExecutableFile(candidate: string): Promise<boolean> {
  try {
    const info = await stat(candidate);
    if (!info.isFile()) return false;
    await access(candidate, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function isDirectory(candidate: string): Promise<boolean> {
  try {
    return (await stat(candidate)).isDirectory();
  } catch {
    return false;
  }
}

async function fileExists(candidate: string): Promise<boolean> {
  try {
    return (await stat(candidate)).isFile();
  } catch {
    return false;
  }
}

/**
 * The absolute path of `command`: taken as a path when it contains a separator, otherwise looked up
 * in `env.PATH` the way a shell would (empty PATH entries are skipped rather than meaning the cwd).
 */
export async function resolveExecutable(command: string, env: Env): Promise<string | null> {
  if (command.includes("/")) {
    const absolute = path.resolve(command);
    return (await isExecutableFile(absolute)) ? absolute : null;
  }
  for (const directory of (env.PATH ?? "").split(path.delimiter)) {
    if (directory === "") continue;
    const candidate = path.resolve(directory, command);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return null;
}

function configuredCommand(source: ExecutableSource, env: Env): string {
  return env[source.variable] || source.defaultCommand;
}

/** Null when the executable resolves; otherwise what is missing and how to provide it. */
export async function missingExecutableMessage(source: ExecutableSource, env: Env): Promise<string | null> {
  const command = configuredCommand(source, env);
  if (await resolveExecutable(command, env)) return null;
  const origin = env[source.variable] ? ` (from ${source.variable})` : "";
  const where = command.includes("/")
    ? `at "${command}"${origin}, or it is not an executable file`
    : `(looked for "${command}" on PATH${origin})`;
  return `${source.defaultCommand} not found ${where}; ${source.installHint} or set ${source.variable}`;
}

/** argv[0]: the resolved path, so that the process does not depend on how the agent looks up PATH. */
export async function executableForCommand(source: ExecutableSource, env: Env): Promise<string> {
  const command = configuredCommand(source, env);
  return (await resolveExecutable(command, env)) ?? command;
}

/** A pair of directories for one process: `<prefix>_in_<n>` holds its inputs, `<prefix>_out_<n>` its outputs. */
export interface BatchDirectories {
  inputDir: string;
  outputDir: string;
}

const batchNumber = (prefix: string, entry: string): number | null => {
  const match = new RegExp(`^${prefix}_in_(\\d+)$`).exec(entry);
  return match ? Number(match[1]) : null;
};

async function batchNumbersIn(workDir: string, prefix: string): Promise<number[]> {
  let entries: string[];
  try {
    entries = await readdir(workDir);
  } catch {
    return [];
  }
  return entries.flatMap((entry) => {
    const n = batchNumber(prefix, entry);
    return n === null ? [] : [n];
  });
}

function batchDirectories(workDir: string, prefix: string, n: number): BatchDirectories {
  return {
    inputDir: path.resolve(workDir, `${prefix}_in_${n}`),
    outputDir: path.resolve(workDir, `${prefix}_out_${n}`),
  };
}

/**
 * Claims a fresh input directory under `workDir`. A non-recursive mkdir is the claim, so concurrent
 * prepares never share one; the output directory is left for the tool to create.
 */
export async function createBatchDirectories(workDir: string, prefix: string): Promise<BatchDirectories> {
  await mkdir(workDir, { recursive: true });
  let n = Math.max(0, ...(await batchNumbersIn(workDir, prefix))) + 1;
  for (;;) {
    const directories = batchDirectories(workDir, prefix, n);
    try {
      await mkdir(directories.inputDir);
      return directories;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      n += 1;
    }
  }
}

/**
 * The batch whose input directory holds `inputFileName`, newest first (an input prepared again after a
 * retry is read from its latest run). `parse` is not handed the command, so this is how it finds outputs.
 */
export async function findBatchDirectories(
  workDir: string,
  prefix: string,
  inputFileName: string,
): Promise<BatchDirectories | null> {
  const numbers = (await batchNumbersIn(workDir, prefix)).sort((a, b) => b - a);
  for (const n of numbers) {
    const directories = batchDirectories(workDir, prefix, n);
    if (await fileExists(path.join(directories.inputDir, inputFileName))) return directories;
  }
  return null;
}

type JsonFileRead =
  | { kind: "ok"; value: JsonObject }
  | { kind: "missing" }
  | { kind: "malformed"; reason: string };

/** Reads a file that should hold one JSON object; never throws for a missing or broken file. */
async function readJsonObject(file: string): Promise<JsonFileRead> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { kind: "missing" };
    return { kind: "malformed", reason: (error as Error).message };
  }
  let value: JsonValue;
  try {
    value = JSON.parse(text) as JsonValue;
  } catch (error) {
    return { kind: "malformed", reason: (error as Error).message };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { kind: "malformed", reason: "expected a JSON object" };
  }
  return { kind: "ok", value };
}

/** A tool's JSON output, or the failure to report for it (missing, or not a JSON object). */
export async function readOutputJson(
  file: string,
  tool: string,
  exit: ProcessExit,
): Promise<{ ok: true; value: JsonObject } | { ok: false; error: PredictionError }> {
  const read = await readJsonObject(file);
  if (read.kind === "ok") return { ok: true, value: read.value };
  if (read.kind === "missing") return { ok: false, error: missingOutputError(tool, [file], exit) };
  return { ok: false, error: malformedOutputError(file, read.reason) };
}

/** The files among `files` that do not exist. */
export async function missingFiles(files: string[]): Promise<string[]> {
  const present = await Promise.all(files.map(fileExists));
  return files.filter((_, index) => !present[index]);
}

/** How the process ended, when it did not succeed: e.g. `boltz exited with code 1: <stderr tail>`. */
export function processFailure(tool: string, exit: ProcessExit): string | null {
  if (exit.code === 0 && exit.signal === null) return null;
  const how = exit.signal !== null ? `was killed by signal ${exit.signal}` : `exited with code ${exit.code}`;
  const tail = exit.stderrTail.trim();
  return tail === "" ? `${tool} ${how}` : `${tool} ${how}: ${tail}`;
}

/** Missing outputs, with the process's failure when there was one (the likely reason). */
export function missingOutputError(tool: string, missing: string[], exit: ProcessExit): PredictionError {
  const names = missing.map((file) => path.basename(file)).join(", ");
  const directory = path.dirname(missing[0] ?? "");
  const failure = processFailure(tool, exit);
  const message = `missing output ${missing.length === 1 ? "file" : "files"} ${names} in ${directory}`;
  if (failure !== null) return { code: "process_failed", message: `${message}; ${failure}` };
  const it = missing.length === 1 ? "it" : "them";
  return { code: "output_missing", message: `${message}; ${tool} exited with code 0 without writing ${it}` };
}

export function malformedOutputError(file: string, reason: string): PredictionError {
  return {
    code: "output_malformed",
    message: `${path.basename(file)} is not valid output (${reason}): ${file}`,
  };
}

/** `parse` was asked about an input that no `prepare` under this work directory wrote. */
export function notPreparedError(inputId: string, workDir: string): PredictionError {
  return { code: "not_prepared", message: `no prepared input for ${inputId} under ${workDir}` };
}

export function failedResult(inputId: string, error: PredictionError): PredictionResult {
  return { inputId, status: "failed", error, confidence: {}, details: {}, structures: [] };
}

/** `prepare`'s answer when no input of the batch can be prepared. */
export function failAll(
  inputs: PredictionInput[],
  error: PredictionError,
): { command: null; failed: PredictionResult[] } {
  return { command: null, failed: inputs.map((input) => failedResult(input.id, error)) };
}

export const isFiniteNumber = (value: JsonValue | undefined): value is number =>
  typeof value === "number" && Number.isFinite(value);

/** The fields of `source` named in `keys` that hold finite numbers. */
export function numericFields(source: JsonObject, keys: readonly string[]): Record<string, number> {
  const picked: Record<string, number> = {};
  for (const key of keys) {
    const value = source[key];
    if (isFiniteNumber(value)) picked[key] = value;
  }
  return picked;
}

/** An integer parameter: the validated value, else the spec's default, else `undefined`. */
export function integerParameter(spec: ModelSpec, parameters: JsonObject, name: string): number | undefined {
  const value = parameters[name] ?? spec.parameters[name]?.default;
  return typeof value === "number" && Number.isInteger(value) ? value : undefined;
}

export function stringParameter(spec: ModelSpec, parameters: JsonObject, name: string): string | undefined {
  const value = parameters[name] ?? spec.parameters[name]?.default;
  return typeof value === "string" && value !== "" ? value : undefined;
}
