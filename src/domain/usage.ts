import type { Job } from "./job.ts";
import { attemptChargeKey, type NewLedgerEntry } from "./ledger.ts";
import { costOfTime } from "./money.ts";

/** One attempt's use of an instance: its time, at the price and share fixed when it was claimed. */
export interface UsageRecord {
  jobId: string;
  attempt: number;
  startedAt: number;
  endedAt: number;
  orgId: string;
  userId: string | null;
  batchId: string | null;
  /** "notebook", or the model a prediction ran. */
  model: string;
  provider: string;
  instanceId: string;
  gpuType: string | null;
  gpuCount: number;
  pricePerHourMicro: number;
  /** Runs packed together on the instance; each pays 1/share of its price while it runs. */
  share: number;
  costMicro: number;
}

/** What a claim records in a job's `compute` for billing: the instance's price and the packing. */
export interface BillingTerms {
  price_micro_per_hour: number;
  share: number;
}

const numberOr = (value: unknown, fallback: number) =>
  typeof value === "number" && Number.isFinite(value) ? value : fallback;

/**
 * The usage of the attempt `job` (as it was while running) ends at `endedAt`; null when the attempt
 * never ran on an instance (it was still queued).
 */
export function attemptUsage(job: Job, endedAt: number): UsageRecord | null {
  const compute = job.compute;
  if (job.startedAt === null || !compute || typeof compute.instance_id !== "string") return null;
  const pricePerHourMicro = numberOr(compute.price_micro_per_hour, 0);
  const share = Math.max(1, Math.floor(numberOr(compute.share, 1)));
  const gpus = Array.isArray(compute.gpus) ? compute.gpus : [];
  const ms = Math.max(0, endedAt - job.startedAt);
  return {
    jobId: job.id,
    attempt: job.attempts,
    startedAt: job.startedAt,
    endedAt,
    orgId: job.orgId,
    userId: job.userId,
    batchId: job.batchId,
    model: job.kind === "notebook" ? "notebook" : String(job.spec.model ?? job.kind),
    provider: typeof compute.provider === "string" ? compute.provider : "unknown",
    instanceId: compute.instance_id,
    gpuType: job.gpuType,
    gpuCount: gpus.length,
    pricePerHourMicro,
    share,
    costMicro: costOfTime(pricePerHourMicro, ms, share),
  };
}

/** The charge for one attempt, taken from the hold of its run (or of its batch). */
export function usageCharge(usage: UsageRecord): NewLedgerEntry | null {
  if (usage.costMicro <= 0) return null;
  return {
    orgId: usage.orgId,
    key: attemptChargeKey(usage.jobId, usage.attempt, usage.startedAt),
    kind: "charge",
    from: "held",
    to: "spent",
    amount: usage.costMicro,
    subject: usage.batchId ?? usage.jobId,
    userId: usage.userId,
    note: null,
  };
}
