import { type RetryPolicy, retryDelayMs } from "./backoff.ts";
import type { JsonObject } from "./json.ts";

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

export const isTerminal = (status: JobStatus): boolean => TERMINAL_STATUSES.includes(status);

/** A notebook run, or one ligand's prediction (alone, or a child of a batch). */
export type JobKind = "notebook" | "predict";

export interface GpuRequest {
  type: string;
  count: number;
}

export interface JobError {
  code: string;
  message: string;
  /** Failures that cannot succeed on another attempt (a notebook cell raising) are not retried. */
  retryable: boolean;
  details?: JsonObject;
}

export interface JobProgress {
  done: number;
  total: number;
  /** What the run is doing now, e.g. "running cell 3/7" or "uploading outputs". */
  phase: string;
}

export interface Job {
  id: string;
  orgId: string;
  kind: JobKind;
  notebookId: string | null;
  /** The batch a prediction belongs to; its counters move with this job's status. */
  batchId: string | null;
  spec: JsonObject;
  status: JobStatus;
  priority: number;
  attempts: number;
  maxAttempts: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
  runAt: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  leaseOwner: string | null;
  leaseToken: string | null;
  leaseExpiresAt: number | null;
  cancelRequested: boolean;
  progress: JobProgress | null;
  error: JobError | null;
  /** Where the current or last attempt ran, e.g. instance id, provider and the GPUs it got. */
  compute: JsonObject | null;
  /** A prediction's result record (score, confidence, structure files); null for notebooks. */
  result: JsonObject | null;
  /** Who submitted it (null for work submitted before users existed). */
  userId: string | null;
  /** The GPU type it asked for, null for none. */
  gpuType: string | null;
}

export type FailureDecision =
  | { status: "queued"; runAt: number }
  | { status: "failed" }
  | { status: "cancelled" };

/**
 * What happens to a job whose attempt failed: cancelled if a cancel is pending, back to the queue
 * after a backoff, or failed for good.
 */
export function decideAfterFailure(
  job: Pick<Job, "attempts" | "maxAttempts" | "backoffMinMs" | "backoffMaxMs" | "cancelRequested">,
  error: Pick<JobError, "retryable">,
  now: number,
  random?: () => number,
): FailureDecision {
  if (job.cancelRequested) return { status: "cancelled" };
  if (!error.retryable || job.attempts >= job.maxAttempts) return { status: "failed" };
  const policy: RetryPolicy = {
    maxAttempts: job.maxAttempts,
    backoffMinMs: job.backoffMinMs,
    backoffMaxMs: job.backoffMaxMs,
  };
  return { status: "queued", runAt: now + retryDelayMs(policy, job.attempts, random) };
}

/** Whether a run may be cancelled; finished runs answer 409. */
export function canCancel(status: JobStatus): boolean {
  return status === "queued" || status === "running";
}
