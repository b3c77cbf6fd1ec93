import type { ControlPlaneClient } from "./control-plane-client.ts";

export interface LogShipperEntry {
  seq: number;
  ts: number;
  stream: string;
  text: string;
}

/** The lease of one attempt whose log lines are shipped, and where its sequence numbers resume. */
export interface LoggedAttempt {
  job_id: string;
  lease_token: string;
  attempt: number;
  log_seq_after: number;
}

/** One attempt's log as its runner writes it; the shipper sends it with every other attempt's. */
export interface AttemptLog {
  write(stream: string, text: string): void;
  line(text: string): void;
  /**
   * Stops shipping this attempt's lines and hands over the ones not shipped yet, for a caller that
   * sends them with its finish (one request instead of two).
   */
  take(): Promise<LogShipperEntry[]>;
}

interface Shipped {
  attempt: LoggedAttempt;
  seq: number;
  pending: LogShipperEntry[];
}

/** Lines per request: a few hundred KiB at most, well inside the server's body limit. */
const ENTRIES_PER_REQUEST = 1000;

/**
 * Ships the log lines of every attempt it was opened for, every `intervalMs`, in one request: a
 * packed unit's 64 children each shipping their own sent 64 requests at once, which held other
 * requests to the server up for tens of milliseconds. Each entry has a sequence number, so a request
 * re-sent after a lost response is stored once; an attempt whose lease is lost is shipped no more.
 */
export class LogShipper {
  readonly #client: Pick<ControlPlaneClient, "post">;
  readonly #timer: NodeJS.Timeout;
  readonly #shipping = new Map<string, Shipped>();
  #flushing: Promise<void> = Promise.resolve();

  constructor(client: Pick<ControlPlaneClient, "post">, intervalMs = 500) {
    this.#client = client;
    this.#timer = setInterval(() => void this.flush().catch(() => undefined), intervalMs);
  }

  open(attempt: LoggedAttempt): AttemptLog {
    const shipped: Shipped = { attempt, seq: attempt.log_seq_after, pending: [] };
    this.#shipping.set(attempt.job_id, shipped);
    const write = (stream: string, text: string) => {
      if (text === "" || this.#shipping.get(attempt.job_id) !== shipped) return;
      shipped.pending.push({ seq: ++shipped.seq, ts: Date.now(), stream, text });
    };
    return {
      write,
      line: (text) => write("hangar", `[hangar] ${text}\n`),
      take: async () => {
        this.#shipping.delete(attempt.job_id);
        // A request in flight may carry some of these lines: its answer removes them first.
        await this.#flushing.catch(() => undefined);
        return shipped.pending.splice(0);
      },
    };
  }

  /** A failed flush keeps its entries for the next one; it never blocks later flushes. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing
      .catch(() => undefined)
      .then(async () => {
        for (let batch = this.#nextBatch(); batch.length > 0; batch = this.#nextBatch()) {
          const answer = await this.#client.post<{ lost: string[] }>("/agent/v1/logs", {
            items: batch.map(({ shipped, entries }) => ({
              job_id: shipped.attempt.job_id,
              lease_token: shipped.attempt.lease_token,
              attempt: shipped.attempt.attempt,
              entries,
            })),
          });
          const lost = new Set(answer?.lost ?? []);
          for (const { shipped, entries } of batch) {
            shipped.pending.splice(0, entries.length);
            if (!lost.has(shipped.attempt.job_id)) continue;
            // The control plane ended this attempt: its lines have nowhere to go.
            shipped.pending.length = 0;
            this.#shipping.delete(shipped.attempt.job_id);
          }
        }
      });
    return this.#flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  #nextBatch(): { shipped: Shipped; entries: LogShipperEntry[] }[] {
    const batch: { shipped: Shipped; entries: LogShipperEntry[] }[] = [];
    let room = ENTRIES_PER_REQUEST;
    for (const shipped of this.#shipping.values()) {
      if (room === 0) break;
      if (shipped.pending.length === 0) continue;
      const entries = shipped.pending.slice(0, room);
      room -= entries.length;
      batch.push({ shipped, entries });
    }
    return batch;
  }
}
