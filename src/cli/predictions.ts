import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { JsonObject } from "../domain/json.ts";
import { parseParameterAssignment } from "../domain/parameters.ts";
import { HangarClient } from "./client.ts";
import { collect, exitCodeOf, integer, print } from "./options.ts";

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "rejected"]);
const BAR = 24;

export interface BatchView {
  id: string;
  name: string;
  status: string;
  progress: {
    total: number;
    pending: number;
    running: number;
    completed: number;
    failed: number;
    cancelled: number;
  };
  score: { name: string; unit: string; better: string; best: number | null; mean: number | null };
  eta_s: number | null;
  error: { code: string; message: string } | null;
}

export interface PredictionView {
  id: string;
  status: string;
  ligand: { name: string; smiles: string; fragments_dropped: number };
  result: { score: number | null; unit: string; confidence: Record<string, number> } | null;
  error: { code: string; message: string } | null;
}

interface TargetOptions {
  model: string;
  receptor?: string;
  protein?: string;
  msa?: string;
  param: string[];
  priority?: number;
}

/** A dataset id as given, or the file uploaded as a new dataset. */
async function datasetOf(client: HangarClient, fileOrDataset: string): Promise<string> {
  if (/^ds_[0-9a-f]+$/.test(fileOrDataset)) return fileOrDataset;
  const dataset = await client.uploadDataset([
    { path: resolve(fileOrDataset), name: basename(fileOrDataset) },
  ]);
  return dataset.id;
}

/** The body fields every prediction shares; receptor and MSA files are uploaded as datasets first. */
async function targetBody(client: HangarClient, options: TargetOptions): Promise<JsonObject> {
  const parameters: JsonObject = {};
  for (const assignment of options.param) {
    const [name, value] = parseParameterAssignment(assignment);
    parameters[name] = value;
  }
  const body: JsonObject = { model: options.model, parameters };
  if (options.protein) body.protein_sequence = options.protein;
  if (options.receptor) body.receptor = await datasetOf(client, options.receptor);
  if (options.msa) body.msa = await datasetOf(client, options.msa);
  if (options.priority !== undefined) body.priority = options.priority;
  return body;
}

/** One line per change: done/total, failed, best so far and ETA. */
export function batchProgressLine(batch: BatchView, elapsedMs: number): string {
  const { progress: p, score } = batch;
  const done = p.completed + p.failed + p.cancelled;
  const filled = p.total > 0 ? Math.round((done / p.total) * BAR) : 0;
  const best = score.best === null ? "–" : `${score.best} ${score.unit}`.trim();
  const eta = batch.eta_s === null ? "" : `  ETA ${batch.eta_s}s`;
  return `[${"#".repeat(filled)}${".".repeat(BAR - filled)}] ${done}/${p.total} done, ${p.failed} failed, ${p.running} running  best ${best}  ${(elapsedMs / 1000).toFixed(0)}s${eta}  ${batch.status}`;
}

async function waitForBatch(client: HangarClient, id: string, quiet: boolean): Promise<BatchView> {
  const started = Date.now();
  let last = "";
  for (;;) {
    const batch = await client.request<BatchView>("GET", `/api/v1/batches/${encodeURIComponent(id)}`);
    if (!quiet) {
      const line = batchProgressLine(batch, Date.now() - started);
      const key = line.replace(/\s+\d+s(\s+ETA \d+s)?\s+/, " ");
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${line}`);
      else if (key !== last) process.stderr.write(`${line}\n`);
      last = key;
    }
    if (TERMINAL.has(batch.status)) {
      if (!quiet && process.stderr.isTTY) process.stderr.write("\n");
      return batch;
    }
    await sleep(1000);
  }
}

async function waitForPrediction(client: HangarClient, id: string): Promise<PredictionView> {
  for (;;) {
    const job = await client.request<PredictionView>("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
    if (TERMINAL.has(job.status)) return job;
    await sleep(500);
  }
}

/** Saves every artifact of a batch (or file of a prediction job) under `out`. */
export async function downloadPredictionFiles(
  client: HangarClient,
  id: string,
  out: string,
): Promise<string[]> {
  const links = id.startsWith("batch_")
    ? (
        await client.request<{ artifacts: { path: string; url: string }[] }>(
          "GET",
          `/api/v1/batches/${id}/download`,
        )
      ).artifacts
    : (await client.request<{ files: { path: string; url: string }[] }>("GET", `/api/v1/jobs/${id}/download`))
        .files;
  const saved: string[] = [];
  for (const link of links) {
    const target = join(out, ...link.path.split("/"));
    await mkdir(join(target, ".."), { recursive: true });
    const response = await fetch(link.url);
    if (!response.ok || !response.body)
      throw new Error(`Download of ${link.path} failed: HTTP ${response.status}`);
    await pipeline(Readable.fromWeb(response.body), createWriteStream(target));
    saved.push(target);
  }
  return saved;
}

export function addPredictionCommands(program: Command): void {
  program
    .command("predict")
    .description("predict how one ligand binds a target (vina: --receptor; boltz2/alphafold3: --protein)")
    .requiredOption("--model <name>", "vina, boltz2 or alphafold3")
    .option("--receptor <file-or-dataset>", "receptor .pdb/.pdbqt file, or a dataset id")
    .option("--protein <sequence>", "protein sequence (sequence models)")
    .option(
      "--msa <file-or-dataset>",
      "the protein's precomputed MSA (.a3m) for boltz2/alphafold3, or a dataset id",
    )
    .requiredOption("--smiles <smiles>", "the ligand")
    .option("--name <name>", "the ligand's name")
    .option("-p, --param <name=value>", "a model parameter (JSON when it parses); repeatable", collect, [])
    .option("--priority <n>", "higher runs first", integer)
    .option("--wait", "wait for the result")
    .option("--json", "print one JSON object")
    .action(
      async (options: TargetOptions & { smiles: string; name?: string; wait?: boolean; json?: boolean }) => {
        const client = HangarClient.fromEnv();
        const body: JsonObject = { ...(await targetBody(client, options)), ligand_smiles: options.smiles };
        if (options.name) body.ligand_name = options.name;
        let job = await client.request<PredictionView>("POST", "/api/v1/predict", body);
        if (!options.json) process.stderr.write(`submitted ${job.id}\n`);
        if (options.wait) job = await waitForPrediction(client, job.id);
        if (options.json) print(job);
        else if (job.result)
          print(`${job.ligand.name}: ${job.result.score} ${job.result.unit} (${job.status})`);
        else print(`${job.id} ${job.status}${job.error ? `: ${job.error.code}: ${job.error.message}` : ""}`);
        if (options.wait) process.exitCode = exitCodeOf(job.status);
      },
    );

  program
    .command("screen")
    .description("screen many ligands against one target as a batch")
    .requiredOption("--model <name>", "vina, boltz2 or alphafold3")
    .option("--receptor <file-or-dataset>", "receptor .pdb/.pdbqt file, or a dataset id")
    .option("--protein <sequence>", "protein sequence (sequence models)")
    .option(
      "--msa <file-or-dataset>",
      "the protein's precomputed MSA (.a3m) for boltz2/alphafold3, or a dataset id",
    )
    .requiredOption("--ligands <file>", "a .csv with a smiles column (and name), a .smi, or an .sdf")
    .option("--name <name>", "the batch's name")
    .option("--max-concurrent <n>", "children running at once", integer)
    .option("--skip-invalid", "run the valid ligands and record the invalid ones as failed")
    .option("-p, --param <name=value>", "a model parameter (JSON when it parses); repeatable", collect, [])
    .option("--priority <n>", "higher runs first", integer)
    .option("--wait", "wait for the batch, showing progress")
    .option("--json", "print one JSON object")
    .action(
      async (
        options: TargetOptions & {
          ligands: string;
          name?: string;
          maxConcurrent?: number;
          skipInvalid?: boolean;
          wait?: boolean;
          json?: boolean;
        },
      ) => {
        const client = HangarClient.fromEnv();
        const ligands = await client.uploadDataset([
          { path: resolve(options.ligands), name: basename(options.ligands) },
        ]);
        const body: JsonObject = { ...(await targetBody(client, options)), ligands_dataset: ligands.id };
        if (options.name) body.batch_name = options.name;
        if (options.maxConcurrent !== undefined) body.max_concurrent = options.maxConcurrent;
        if (options.skipInvalid) body.skip_invalid = true;
        let batch = await client.request<BatchView>("POST", "/api/v1/predict/batch", body);
        if (!options.json) process.stderr.write(`submitted ${batch.id} (${batch.progress.total} ligands)\n`);
        if (options.wait) batch = await waitForBatch(client, batch.id, Boolean(options.json));
        if (options.json) print(batch);
        else if (batch.error) print(`${batch.id} ${batch.status}: ${batch.error.message}`);
        else {
          print(
            `${batch.id} ${batch.status}: ${batch.progress.completed}/${batch.progress.total} scored, best ${batch.score.best ?? "–"} ${batch.score.unit}`,
          );
        }
        if (options.wait) process.exitCode = exitCodeOf(batch.status);
      },
    );

  program
    .command("results")
    .description("a batch's ranked results")
    .argument("<batch-id>")
    .option("--top <n>", "only the best N", integer)
    .option("--format <format>", "table, csv or json", "table")
    .action(async (id: string, options: { top?: number; format: string }) => {
      const client = HangarClient.fromEnv();
      const query = `?sort=rank${options.top ? `&limit=${options.top}` : ""}`;
      if (options.format === "csv") {
        return print(
          (await client.request<string>("GET", `/api/v1/batches/${id}/results${query}&format=csv`)).trimEnd(),
        );
      }
      const answer = await client.request<{
        results: {
          rank: number | null;
          name: string;
          status: string;
          score: number | null;
          unit: string;
          error: string | null;
        }[];
      }>("GET", `/api/v1/batches/${id}/results${query}`);
      if (options.format === "json") return print(answer);
      for (const row of answer.results) {
        const score = row.score === null ? (row.error ?? row.status) : `${row.score} ${row.unit}`;
        print(`${String(row.rank ?? "-").padStart(5)}  ${row.name.padEnd(24)}  ${score}`);
      }
    });
}
