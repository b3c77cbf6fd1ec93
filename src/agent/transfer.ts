import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, stat } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** A signed-URL transfer that the blob endpoint answered with an error status. */
export class TransferError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * How long a transfer keeps retrying a store it cannot reach or that answers 5xx: long enough to ride
 * out a restart of the control plane (whose API serves the filesystem store's URLs) or a storage
 * outage, as the agent's calls to the control plane do.
 */
const TRANSFER_RETRY_MS = 15 * 60_000;

/** Runs a transfer again after a network error or a 5xx, backing off to 5 s; other failures throw. */
async function retried<T>(transfer: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  const deadline = Date.now() + TRANSFER_RETRY_MS;
  for (let delay = 200; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await transfer();
    } catch (error) {
      const transient =
        (error instanceof TransferError && error.status >= 500) ||
        (error instanceof TypeError && error.message === "fetch failed");
      if (!transient || signal?.aborted || Date.now() + delay > deadline) throw error;
      await sleep(delay, undefined, signal ? { signal } : {});
    }
  }
}

/** Streams a signed GET URL into a file; `signal` abandons it (cancel, timeout, shutdown). */
export function downloadTo(url: string, path: string, signal?: AbortSignal): Promise<void> {
  return retried(() => downloadOnce(url, path, signal), signal);
}

async function downloadOnce(url: string, path: string, signal?: AbortSignal): Promise<void> {
  const response = await fetch(url, signal ? { signal } : {});
  if (!response.ok || !response.body) {
    throw new TransferError(
      response.status,
      `Download failed with HTTP ${response.status}: ${await response.text()}`,
    );
  }
  await mkdir(dirname(path), { recursive: true });
  await pipeline(Readable.fromWeb(response.body), createWriteStream(path), signal ? { signal } : {});
}

/** Streams a file to a signed PUT URL, with the headers the store asked for. */
export function uploadFrom(
  path: string,
  target: { url: string; headers?: Readonly<Record<string, string>> },
): Promise<void> {
  return retried(() => uploadOnce(path, target));
}

async function uploadOnce(
  path: string,
  target: { url: string; headers?: Readonly<Record<string, string>> },
): Promise<void> {
  const { size } = await stat(path);
  const response = await fetch(target.url, {
    method: "PUT",
    headers: {
      "content-type": "application/octet-stream",
      "content-length": String(size),
      ...target.headers,
    },
    body: Readable.toWeb(createReadStream(path)) as ReadableStream,
    duplex: "half",
  } as RequestInit);
  if (!response.ok) {
    throw new TransferError(
      response.status,
      `Upload of ${basename(path)} failed with HTTP ${response.status}: ${await response.text()}`,
    );
  }
}

/** Every regular file under `root`, as `/`-separated paths relative to it. */
export async function listFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)).split(sep).join("/"))
    .sort();
}
