import type { ControlPlaneClient } from "./control-plane-client.ts";

export interface LogShipperEntry {
  seq: number;
  ts: number;
  stream: string;
  text: string;
}

/**
 * Batches log lines and ships them every `intervalMs`. Each entry has a sequence number, so a
 * batch re-sent after a lost response is stored once.
 */
export class LogShipper {
  readonly #client: ControlPlaneClient;
  readonly #path: string;
  readonly #lease: { lease_token: string; attempt: number };
  readonly #timer: NodeJS.Timeout;
  #pending: LogShipperEntry[] = [];
  #seq = 0;
  #flushing: Promise<void> = Promise.resolve();

  constructor(
    client: ControlPlaneClient,
    jobId: string,
    leaseToken: string,
    attempt: number,
    seqAfter: number,
    intervalMs = 500,
  ) {
    this.#seq = seqAfter;
    this.#client = client;
    this.#path = `/agent/v1/jobs/${jobId}/logs`;
    this.#lease = { lease_token: leaseToken, attempt };
    this.#timer = setInterval(() => void this.flush().catch(() => undefined), intervalMs);
  }

  write(stream: string, text: string): void {
    if (text === "") return;
    this.#pending.push({ seq: ++this.#seq, ts: Date.now(), stream, text });
  }

  line(text: string): void {
    this.write("hangar", `[hangar] ${text}\n`);
  }

  /** A failed flush keeps its entries for the next one; it never blocks later flushes. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing
      .catch(() => undefined)
      .then(async () => {
        while (this.#pending.length > 0) {
          const batch = this.#pending.slice(0, 1000);
          await this.#client.post(this.#path, { ...this.#lease, entries: batch });
          this.#pending.splice(0, batch.length);
        }
      });
    return this.#flushing;
  }

  /**
   * Stops shipping and hands over the entries not shipped yet, for a caller that sends them along
   * with its finish (one request instead of two).
   */
  async take(): Promise<LogShipperEntry[]> {
    clearInterval(this.#timer);
    await this.#flushing.catch(() => undefined);
    return this.#pending.splice(0);
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}
