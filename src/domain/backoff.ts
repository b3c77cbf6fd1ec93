export interface RetryPolicy {
  maxAttempts: number;
  backoffMinMs: number;
  backoffMaxMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 3,
  backoffMinMs: 10_000,
  backoffMaxMs: 300_000,
};

/**
 * Delay before attempt `attemptsMade + 1`: capped exponential backoff with "equal jitter", so retries
 * of many jobs that failed together spread out but never wait less than half the nominal delay.
 */
export function retryDelayMs(
  policy: RetryPolicy,
  attemptsMade: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, attemptsMade - 1);
  const nominal = Math.min(policy.backoffMaxMs, policy.backoffMinMs * 2 ** exponent);
  const half = nominal / 2;
  return Math.max(policy.backoffMinMs, Math.round(half + random() * half));
}
