import type { JobStatus } from "./job.ts";
import type { JsonObject } from "./json.ts";

/**
 * `validating`: a big batch accepted before its ligands were checked (they are checked in the
 * background); `rejected`: that check found invalid rows and `skip_invalid` was not set.
 */
export const BATCH_STATUSES = [
  "validating",
  "rejected",
  "queued",
  "running",
  "succeeded",
  "failed",
  "cancelled",
] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

/** Children by state. They live on the batch row and move in the same transaction as each child. */
export interface BatchCounters {
  total: number;
  pending: number;
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
}

export type CounterName = Exclude<keyof BatchCounters, "total">;

/** Which counter a child in `status` counts in. */
export function counterFor(status: JobStatus): CounterName {
  switch (status) {
    case "queued":
      return "pending";
    case "running":
      return "running";
    case "succeeded":
      return "completed";
    case "failed":
      return "failed";
    case "cancelled":
      return "cancelled";
  }
}

export type ScoreDirection = "lower" | "higher";

export function isBetter(candidate: number, current: number | null, better: ScoreDirection): boolean {
  if (current === null) return true;
  return better === "lower" ? candidate < current : candidate > current;
}

export interface Batch {
  id: string;
  orgId: string;
  name: string;
  model: string;
  modelVersion: string;
  status: BatchStatus;
  priority: number;
  maxConcurrent: number;
  counters: BatchCounters;
  scoreName: string;
  scoreUnit: string;
  scoreBetter: ScoreDirection;
  bestScore: number | null;
  bestJobId: string | null;
  /** Running sums of succeeded children's scores, for the mean and spread without reading children. */
  scoreCount: number;
  scoreSum: number;
  scoreSquareSum: number;
  /** The target, parameters and submit-time notes (skipped rows, renamed ligands). */
  spec: JsonObject;
  cancelRequested: boolean;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** When its artifacts were last written; they are final once this is at or after `finishedAt`. */
  artifactsAt: number | null;
}

/** The status a batch has once its counters say so; a batch with work left stays running. */
export function batchStatusOf(
  counters: BatchCounters,
  cancelRequested: boolean,
  started: boolean,
): BatchStatus {
  if (counters.pending + counters.running > 0) return started ? "running" : "queued";
  if (cancelRequested) return "cancelled";
  return counters.completed > 0 ? "succeeded" : "failed";
}

export const isBatchFinished = (status: BatchStatus) =>
  status === "succeeded" || status === "failed" || status === "cancelled" || status === "rejected";

/** Seconds left at the pace so far (children ended per second since the batch started); null before any. */
export function etaSeconds(counters: BatchCounters, startedAt: number | null, now: number): number | null {
  const ended = counters.completed + counters.failed + counters.cancelled;
  const left = counters.pending + counters.running;
  if (startedAt === null || ended === 0 || now <= startedAt) return left === 0 ? 0 : null;
  return Math.round((left * (now - startedAt)) / ended / 1000);
}

export interface ScoreStatistics {
  count: number;
  mean: number | null;
  std: number | null;
}

/** Mean and population standard deviation from running sums. */
export function statisticsFromSums(count: number, sum: number, squareSum: number): ScoreStatistics {
  if (count === 0) return { count, mean: null, std: null };
  const mean = sum / count;
  const variance = Math.max(0, squareSum / count - mean * mean);
  return { count, mean, std: Math.sqrt(variance) };
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Work waiting to start: queued jobs outside batches, and per batch the children it may start now. */
import type { GpuDemand } from "./provisioning.ts";

export interface ReadyWork {
  /** Queued jobs outside batches that ask for no GPU. */
  jobs: number;
  /** Queued jobs outside batches that ask for GPUs, per type, count and chosen launch strategy. */
  gpuJobs: GpuDemand[];
  /** `startable`: pending children, capped by what `max_concurrent` leaves. */
  batches: { model: string; startable: number }[];
}

/**
 * How many instances' worth of work is waiting: one per single job, and per batch its startable
 * children over what one model process takes (Vina 1, Boltz-2 64), rounded up. Counting a batch
 * as one would start one instance for a screen that could use every core.
 */
export function readyUnits(work: ReadyWork, perProcess: (model: string) => number): number {
  let units = work.jobs;
  for (const batch of work.batches) {
    units += Math.ceil(Math.max(0, batch.startable) / Math.max(1, perProcess(batch.model)));
  }
  return units;
}
