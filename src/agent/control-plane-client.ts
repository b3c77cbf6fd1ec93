import { setTimeout as sleep } from "node:timers/promises";

export class ControlPlaneError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The control plane could not be reached for the whole reconnect window: the agent's kill switch trips. */
export class ControlPlaneUnreachable extends Error {}

/**
 * The agent's only link to the control plane. Network failures and 5xx are retried with capped
 * backoff for up to `reconnectMs`, so an agent rides out a server restart and carries on.
 */
export class ControlPlaneClient {
  readonly baseUrl: string;
  readonly #reconnectMs: number;
  token: string | undefined;

  constructor(baseUrl: string, reconnectMs: number) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.#reconnectMs = reconnectMs;
  }

  /**
   * `stop` ends the retrying (not a request in flight: aborting a claim mid-way could strand a job
   * until its lease lapses).
   */
  async post<T>(path: string, body: unknown, timeoutMs = 30_000, stop?: AbortSignal): Promise<T | null> {
    const deadline = Date.now() + this.#reconnectMs;
    const giveUp = () => stop?.aborted === true || Date.now() > deadline;
    const pause = (ms: number) => sleep(ms, undefined, stop ? { signal: stop } : {}).catch(() => undefined);
    for (let delay = 200; ; delay = Math.min(delay * 2, 5_000)) {
      let response: Response;
      try {
        response = await fetch(`${this.baseUrl}${path}`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (error) {
        if (stop?.aborted === true) throw error;
        if (giveUp()) {
          throw new ControlPlaneUnreachable(
            `no answer from ${this.baseUrl} for ${Math.round(this.#reconnectMs / 1000)} s: ${(error as Error).message}`,
          );
        }
        await pause(delay);
        continue;
      }
      if (response.status >= 500 && !giveUp()) {
        await response.body?.cancel();
        await pause(delay);
        continue;
      }
      if (response.status === 204) return null;
      const text = await response.text();
      const parsed = text ? (JSON.parse(text) as unknown) : null;
      if (!response.ok) {
        const error = (parsed as { error?: { code?: string; message?: string } } | null)?.error;
        throw new ControlPlaneError(response.status, error?.code ?? "http_error", error?.message ?? text);
      }
      return parsed as T;
    }
  }
}
