import { createWriteStream, statSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { JsonObject } from "../domain/json.ts";
import { parseParameterAssignment } from "../domain/parameters.ts";
import type { DownloadLink, HangarClient, RunView, UploadFile } from "./client.ts";
import { ProgressDisplay } from "./progress.ts";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** A file, or every file under a folder (named relative to it). */
async function filesOf(path: string): Promise<UploadFile[]> {
  const absolute = resolve(path);
  if (!statSync(absolute).isDirectory()) return [{ path: absolute, name: basename(absolute) }];
  const entries = await readdir(absolute, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort()
    .map((file) => ({ path: file, name: relative(absolute, file).split(sep).join("/") }));
}

export async function pushDataset(client: HangarClient, paths: string[], name?: string) {
  const files = (await Promise.all(paths.map(filesOf))).flat();
  if (files.length === 0) throw new Error(`No files found in ${paths.join(", ")}`);
  return client.uploadDataset(files, name);
}

export interface RunOptions {
  dataset: string[];
  param: string[];
  gpu?: string;
  gpus?: number;
  strategy?: string;
  priority?: number;
  timeout?: number;
  maxAttempts?: number;
}

export async function submitNotebookRun(
  client: HangarClient,
  notebookPath: string,
  options: RunOptions,
): Promise<RunView> {
  const parameters: JsonObject = {};
  for (const assignment of options.param) {
    const [name, value] = parseParameterAssignment(assignment);
    parameters[name] = value;
  }
  const datasetIds = options.dataset.filter((d) => /^ds_[0-9a-f]+$/.test(d));
  const datasetPaths = options.dataset.filter((d) => !datasetIds.includes(d));
  if (datasetPaths.length > 0) datasetIds.push((await pushDataset(client, datasetPaths)).id);
  const notebook = await client.uploadNotebook(resolve(notebookPath), basename(notebookPath));
  return client.submitRun(notebook.id, {
    datasets: datasetIds,
    parameters,
    gpu: options.gpu ? { type: options.gpu, count: options.gpus ?? 1 } : null,
    ...(options.strategy !== undefined ? { strategy: options.strategy } : {}),
    ...(options.priority !== undefined ? { priority: options.priority } : {}),
    ...(options.timeout !== undefined ? { timeout_s: options.timeout } : {}),
    ...(options.maxAttempts !== undefined ? { max_attempts: options.maxAttempts } : {}),
  });
}

/** Polls until the run ends, drawing progress unless `quiet`. */
export async function waitForRun(client: HangarClient, id: string, quiet: boolean): Promise<RunView> {
  const display = quiet ? null : new ProgressDisplay();
  const started = Date.now();
  for (;;) {
    const run = await client.getRun(id);
    display?.update(run, Date.now() - started);
    if (TERMINAL.has(run.status)) {
      display?.done();
      return run;
    }
    await sleep(400);
  }
}

async function fetchTo(link: DownloadLink, path: string): Promise<void> {
  const response = await fetch(link.url);
  if (!response.ok || !response.body)
    throw new Error(`Downloading ${link.path} failed: HTTP ${response.status}`);
  await mkdir(dirname(path), { recursive: true });
  await pipeline(Readable.fromWeb(response.body), createWriteStream(path));
}

/** Downloads the executed notebook, the log and every output file; returns the local paths. */
export async function downloadRun(client: HangarClient, id: string, outDir: string): Promise<string[]> {
  const view = await client.downloads(id);
  const links = [
    ...(view.executed_notebook ? [view.executed_notebook] : []),
    ...(view.log ? [view.log] : []),
    ...view.outputs.map((o) => ({ ...o, path: `output/${o.path}` })),
  ];
  const written: string[] = [];
  for (const link of links) {
    const path = join(outDir, ...link.path.split("/"));
    await fetchTo(link, path);
    written.push(path);
  }
  return written;
}

export function describeRun(run: RunView): string {
  const lines = [
    `run        ${run.id}`,
    `status     ${run.status}`,
    `attempts   ${run.attempts}/${run.max_attempts}`,
    `created    ${run.created_at}`,
  ];
  if (run.started_at) lines.push(`started    ${run.started_at}`);
  if (run.finished_at) lines.push(`finished   ${run.finished_at}`);
  if (run.progress)
    lines.push(`progress   ${run.progress.done}/${run.progress.total} cells (${run.progress.phase})`);
  if (run.instance)
    lines.push(`instance   ${run.instance.instance_id} on ${run.instance.provider}: ${run.instance.note}`);
  if (run.error) lines.push(`error      ${run.error.code}: ${run.error.message}`);
  return lines.join("\n");
}
