import type { JobError } from "../domain/job.ts";

/** Why the agent stopped work before it ended by itself. */
export type StopReason = "cancel" | "lease_lost" | "timeout" | "shutdown";

export interface StoppedEnding {
  status: "cancelled" | "failed";
  error: JobError;
}

/**
 * How a job the agent stopped ends, for the reasons that end it (a cancel or a timeout); null for
 * the others (a lost lease reports nothing, a shutdown releases the job). `what` names the work.
 */
export function stoppedEnding(
  reason: StopReason | null | undefined,
  timeoutS: number,
  what: string,
): StoppedEnding | null {
  if (reason === "cancel") {
    return {
      status: "cancelled",
      error: { code: "cancelled", message: "Cancelled by request", retryable: false },
    };
  }
  if (reason === "timeout") {
    return {
      status: "failed",
      error: { code: "timeout", message: `${what} exceeded its timeout of ${timeoutS} s`, retryable: false },
    };
  }
  return null;
}
