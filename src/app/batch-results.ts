import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { setImmediate } from "node:timers/promises";
import { promisify } from "node:util";
import { strToU8, type Zippable, zipSync } from "fflate";
import { type Batch, median, statisticsFromSums } from "../domain/batch.ts";
import type { Job } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { AppContext } from "./context.ts";
import type { PredictionJobSpec, PredictionTargetSpec } from "./predictions.ts";
import { runArea } from "./runs.ts";

const execFileAsync = promisify(execFile);

/** One row of a batch's results: every child, ranked by score among the succeeded ones. */
export interface ResultRow {
  rank: number | null;
  job_id: string;
  name: string;
  smiles: string;
  status: Job["status"];
  score: number | null;
  unit: string;
  confidence: Record<string, number>;
  pose_file: string | null;
  error: string | null;
  duration_s: number | null;
}

export const batchArea = (batchId: string) => `batches/${batchId}`;

export const ARTIFACTS = [
  "batch_results.csv",
  "summary.json",
  "affinity_distribution.png",
  "top_10_structures.zip",
] as const;

/** Small pages: SQLite reads synchronously, and each page holds the event loop while it is read. */
const PAGE = 1_000;

/**
 * Every child of a batch as a result row, ranked best first (succeeded by score, then the rest in
 * submission order). Children are read page by page and only their rows are kept, so a batch of
 * 100,000 never holds 100,000 full jobs at once; requests get a turn between pages.
 */
export async function batchRows(ctx: AppContext, batch: Batch): Promise<ResultRow[]> {
  const rows: ResultRow[] = [];
  for (let after: string | undefined; ; ) {
    const page = await ctx.store.listBatchChildren({
      orgId: batch.orgId,
      batchId: batch.id,
      limit: PAGE,
      ...(after ? { after } : {}),
    });
    for (const job of page) rows.push(resultRow(batch, job));
    if (page.length < PAGE) return rank(batch, rows);
    after = page.at(-1)!.id;
    await setImmediate();
  }
}

function resultRow(batch: Batch, job: Job): ResultRow {
  const ligand = (job.spec as unknown as PredictionJobSpec).ligand;
  const result = job.result as
    | (JsonObject & { score?: number | null; confidence?: Record<string, number> })
    | null;
  const structures =
    (result?.structures as { path: string; format: string; role: string }[] | undefined) ?? [];
  const poses = structures.filter((s) => s.role === "pose" || s.role === "complex");
  const pose = poses.find((s) => s.format === "sdf") ?? poses[0];
  return {
    rank: null,
    job_id: job.id,
    name: ligand.name,
    smiles: ligand.smiles || ligand.input_smiles,
    status: job.status,
    score: typeof result?.score === "number" ? result.score : null,
    unit: batch.scoreUnit,
    confidence: result?.confidence ?? {},
    pose_file: pose ? `${job.id}/${pose.path}` : null,
    error: job.error ? `${job.error.code}: ${job.error.message}` : null,
    duration_s:
      job.startedAt !== null && job.finishedAt !== null ? (job.finishedAt - job.startedAt) / 1000 : null,
  };
}

function rank(batch: Batch, rows: ResultRow[]): ResultRow[] {
  const sign = batch.scoreBetter === "lower" ? 1 : -1;
  const scored = rows.filter((r) => r.status === "succeeded" && r.score !== null);
  scored.sort((a, b) => sign * (a.score! - b.score!));
  scored.forEach((row, i) => {
    row.rank = i + 1;
  });
  const rest = rows.filter((r) => r.rank === null);
  return [...scored, ...rest];
}

const csvField = (value: string | number | null) => {
  if (value === null) return "";
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
};

export function resultsCsv(rows: ResultRow[]): string {
  return [...resultsCsvParts(rows)].join("");
}

/** The results CSV in parts of a thousand lines, so a big batch's file is never one string. */
export function* resultsCsvParts(rows: ResultRow[]): Generator<string> {
  const confidenceKeys = [...new Set(rows.flatMap((r) => Object.keys(r.confidence)))].sort();
  const header = [
    "rank",
    "name",
    "smiles",
    "status",
    "score",
    "unit",
    ...confidenceKeys,
    "pose_file",
    "error",
  ];
  yield `${header.join(",")}\n`;
  for (let start = 0; start < rows.length; start += PAGE) {
    let part = "";
    for (const r of rows.slice(start, start + PAGE)) {
      part += `${[
        r.rank,
        r.name,
        r.smiles,
        r.status,
        r.score,
        r.unit,
        ...confidenceKeys.map((k) => r.confidence[k] ?? null),
        r.pose_file,
        r.error,
      ]
        .map(csvField)
        .join(",")}\n`;
    }
    yield part;
  }
}

export function summary(batch: Batch, rows: ResultRow[]): JsonObject {
  const scores = rows.flatMap((r) => (r.score === null ? [] : [r.score]));
  const stats = statisticsFromSums(batch.scoreCount, batch.scoreSum, batch.scoreSquareSum);
  const durations = rows.flatMap((r) => (r.duration_s === null ? [] : [r.duration_s]));
  const spec = batch.spec as unknown as PredictionTargetSpec;
  const { counters } = batch;
  const ended = counters.completed + counters.failed + counters.cancelled;
  return {
    batch_id: batch.id,
    name: batch.name,
    model: batch.model,
    model_version: batch.modelVersion,
    status: batch.status,
    counts: { ...counters },
    success_rate: ended === 0 ? null : counters.completed / ended,
    score: {
      name: batch.scoreName,
      unit: batch.scoreUnit,
      better: batch.scoreBetter,
      best: batch.bestScore,
      best_ligand: rows[0]?.rank === 1 ? rows[0].name : null,
      mean: stats.mean,
      median: median(scores),
      std: stats.std,
    },
    durations_s: {
      wall: batch.startedAt === null ? null : ((batch.finishedAt ?? Date.now()) - batch.startedAt) / 1000,
      per_ligand_median: median(durations),
    },
    parameters: spec.parameters,
    created_at: new Date(batch.createdAt).toISOString(),
    finished_at: batch.finishedAt === null ? null : new Date(batch.finishedAt).toISOString(),
  };
}

/** matplotlib draws the histogram: the field's standard, already on the host for notebooks. */
const HISTOGRAM_SCRIPT = `
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
spec = json.load(sys.stdin)
fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
scores = spec["scores"]
if scores:
    ax.hist(scores, bins=min(30, max(5, len(scores) // 3)), color="#3b7dd8", edgecolor="white")
else:
    ax.text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=ax.transAxes)
ax.set_xlabel(spec["xlabel"])
ax.set_ylabel("ligands")
ax.set_title(spec["title"])
fig.tight_layout()
fig.savefig(spec["out"], format="png")
`;

async function histogramPng(ctx: AppContext, batch: Batch, rows: ResultRow[], path: string): Promise<void> {
  const scores = rows.flatMap((r) => (r.score === null ? [] : [r.score]));
  const better = batch.scoreBetter === "lower" ? "lower is better" : "higher is better";
  const input = JSON.stringify({
    scores,
    out: path,
    xlabel: `best ${batch.scoreName}${batch.scoreUnit ? ` (${batch.scoreUnit})` : ""}, ${better}`,
    title: `${batch.name}: ${scores.length} of ${batch.counters.total} ligands scored`,
  });
  const child = execFileAsync(ctx.config.python, ["-c", HISTOGRAM_SCRIPT], { timeout: 60_000 });
  child.child.stdin?.end(input);
  await child;
}

/**
 * Writes the batch's artifacts under `batches/{id}/`: results CSV, summary, score histogram and a zip
 * of the ten best poses with the receptor. Rewritten while the batch runs and once when it ends.
 */
export async function writeBatchArtifacts(ctx: AppContext, due: Batch, scratchDir: string): Promise<void> {
  // Everything below is read after this instant, so artifacts stamped with it are at least this fresh.
  const snapshotAt = ctx.now();
  const batch = (await ctx.store.getBatch(due.orgId, due.id)) ?? due;
  const rows = await batchRows(ctx, batch);
  const area = batchArea(batch.id);
  await ctx.blobs.put(`${area}/batch_results.csv`, Readable.from(resultsCsvParts(rows)));
  await ctx.blobs.put(
    `${area}/summary.json`,
    Buffer.from(`${JSON.stringify(summary(batch, rows), null, 2)}\n`),
  );
  const png = `${scratchDir}/${batch.id}-histogram.png`;
  try {
    await histogramPng(ctx, batch, rows, png);
    await ctx.blobs.put(`${area}/affinity_distribution.png`, await readFile(png));
  } catch (error) {
    ctx.log.warn(
      { err: error, batch_id: batch.id },
      "could not draw the score histogram (is python3-matplotlib installed?)",
    );
  } finally {
    await rm(png, { force: true });
  }
  const files: Zippable = {};
  for (const row of rows.slice(0, 10)) {
    if (row.rank === null || !row.pose_file) continue;
    const [jobId, ...rest] = row.pose_file.split("/");
    const key = `${runArea(jobId!)}/${rest.join("/")}`;
    if (await ctx.blobs.stat(key)) {
      files[`${String(row.rank).padStart(2, "0")}_${safeName(row.name)}_${rest.at(-1)}`] = strToU8(
        await text(await ctx.blobs.get(key)),
      );
    }
  }
  const receptor = (batch.spec as unknown as PredictionTargetSpec).target?.receptor;
  if (receptor && (await ctx.blobs.stat(receptor.blob_key))) {
    files[`receptor_${receptor.path.split("/").at(-1)}`] = strToU8(
      await text(await ctx.blobs.get(receptor.blob_key)),
    );
  }
  await ctx.blobs.put(`${area}/top_10_structures.zip`, Buffer.from(zipSync(files)));
  await ctx.store.markArtifactsWritten(batch.id, snapshotAt);
}

const safeName = (name: string) => name.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 60);
