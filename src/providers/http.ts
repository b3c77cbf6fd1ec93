import { setTimeout as sleep } from "node:timers/promises";

/** A provider API call that failed for good, with what the provider said. */
export class ProviderApiError extends Error {
  readonly provider: string;
  /** HTTP status, or 0 when the provider was not reached. */
  readonly status: number;
  /** Whether trying again later may succeed (rate limits, outages, no capacity). */
  readonly retryable: boolean;

  constructor(provider: string, status: number, message: string, retryable: boolean) {
    super(`${provider}: ${message}`);
    this.provider = provider;
    this.status = status;
    this.retryable = retryable;
  }
}

export interface RetryPolicy {
  attempts: number;
  /** First pause after a 5xx, a network error or a 429 without Retry-After; multiplied by 1.5 each time (Vast's CLI does the same). */
  firstBackoffMs: number;
  /** Longest pause, also the cap on a Retry-After. */
  maxBackoffMs: number;
  timeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 4,
  firstBackoffMs: 300,
  maxBackoffMs: 30_000,
  timeoutMs: 30_000,
};

/**
 * One JSON call to a provider's API with its credential as a bearer token: retries rate limits
 * (honouring Retry-After), 5xx answers and network errors; a refused credential (401/403) fails at
 * once, naming the setting that holds it, never the credential; any other status is returned to the
 * caller, which knows the provider's error shapes.
 */
export async function callJson(
  provider: string,
  url: string,
  init: { method: string; credential: { value: string; setting: string }; body?: unknown },
  retry: RetryPolicy = DEFAULT_RETRY,
): Promise<{ status: number; body: unknown }> {
  let backoffMs = retry.firstBackoffMs;
  for (let attempt = 1; ; attempt++) {
    const last = attempt >= retry.attempts;
    let response: Response;
    try {
      response = await fetch(url, {
        method: init.method,
        headers: {
          accept: "application/json",
          authorization: `Bearer ${init.credential.value}`,
          ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        signal: AbortSignal.timeout(retry.timeoutMs),
      });
    } catch (err) {
      if (last) throw new ProviderApiError(provider, 0, `unreachable: ${(err as Error).message}`, true);
      await sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 1.5, retry.maxBackoffMs);
      continue;
    }
    const text = await response.text();
    if (response.status === 401 || response.status === 403) {
      throw new ProviderApiError(
        provider,
        response.status,
        `the credential was refused (${init.credential.setting})`,
        false,
      );
    }
    if (response.status === 429 || response.status >= 500) {
      if (last) {
        const what = response.status === 429 ? "rate limited" : `HTTP ${response.status}`;
        throw new ProviderApiError(
          provider,
          response.status,
          `${what} after ${attempt} attempts: ${text.slice(0, 300)}`,
          true,
        );
      }
      const retryAfterS = Number(response.headers.get("retry-after"));
      const pause =
        response.status === 429 && Number.isFinite(retryAfterS) && retryAfterS >= 0
          ? Math.min(retryAfterS * 1000, retry.maxBackoffMs)
          : backoffMs;
      await sleep(pause);
      backoffMs = Math.min(backoffMs * 1.5, retry.maxBackoffMs);
      continue;
    }
    let body: unknown = text;
    try {
      body = text === "" ? null : JSON.parse(text);
    } catch {
      // Left as text: the caller reports it.
    }
    return { status: response.status, body };
  }
}
