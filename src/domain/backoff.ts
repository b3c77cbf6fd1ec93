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

/** Pauses after instances that end before their agent registers: 2 s, 4 s, … up to 5 min. */
export const BOOT_FAILURE_POLICY: RetryPolicy = {
  maxAttempts: 0,
  backoffMinMs: 2_000,
  backoffMaxMs: 300_000,
};

/**
 * Guards a provider against a launch storm: when instances keep dying before their agent registers
 * (a broken image, a missing interpreter), launching again at every tick only burns money. Each such
 * failure in a row pushes the next launch further out; an agent that registers resets it.
 */
export class LaunchBackoff {
  #failuresInARow = 0;
  #pausedUntil = 0;
  #lastFailureAt = Number.NEGATIVE_INFINITY;
  readonly #random: () => number;

  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  get failuresInARow(): number {
    return this.#failuresInARow;
  }

  /** Records a boot failure at `now`; returns when launching may resume. */
  bootFailed(now: number): number {
    this.#failuresInARow += 1;
    this.#lastFailureAt = now;
    this.#pausedUntil = now + retryDelayMs(BOOT_FAILURE_POLICY, this.#failuresInARow, this.#random);
    return this.#pausedUntil;
  }

  /** An agent registered at `at`: launches work again if that came after the last failure. */
  agentRegistered(at: number): void {
    if (at < this.#lastFailureAt) return;
    this.#failuresInARow = 0;
    this.#pausedUntil = 0;
  }

  mayLaunch(now: number): boolean {
    return now >= this.#pausedUntil;
  }
}
