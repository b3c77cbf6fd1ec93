import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, stat } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** A signed-URL transfer that the blob endpoint answered with an error status. */
export class TransferError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** Streams a signed GET URL into a file; `signal` abandons it (cancel, timeout, shutdown). */
export async function downloadTo(url: string, path: string, signal?: AbortSignal): Promise<void> {
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
export async function uploadFrom(
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
