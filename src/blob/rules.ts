import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badRequest, notFound } from "../domain/errors.ts";
import type { BlobObject } from "./blob-store.ts";

/** What every adapter answers for a missing key. */
export function blobNotFound(key: string) {
  return notFound("blob_not_found", `No blob is stored under ${JSON.stringify(key)}.`, { key });
}

/** Listing order of every adapter: UTF-8 byte order, as S3 lists. */
export function byKeyBytes(a: BlobObject, b: BlobObject): number {
  return Buffer.compare(Buffer.from(a.key), Buffer.from(b.key));
}

/** A signed URL's lifetime: whole seconds, positive, and at most what the store can sign. */
export function checkExpiry(expiresInS: number, maxS: number = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(expiresInS) || expiresInS <= 0 || expiresInS > maxS) {
    throw badRequest(
      "invalid_expiry",
      `Signed URL lifetime must be a whole number of seconds from 1 to ${maxS}, got ${expiresInS}.`,
    );
  }
}

/**
 * Streams `body` into an object store's upload and returns the bytes sent. Both sides settle before
 * it answers, so a failed body never leaves an upload still writing behind it; an upload that fails
 * ends the body's pipeline instead of leaving it stalled.
 */
export async function uploadCounting(
  body: Readable,
  upload: (stream: Readable) => Promise<unknown>,
): Promise<number> {
  let size = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      done(null, chunk);
    },
  });
  const uploaded = upload(counted).catch((err: unknown) => {
    counted.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });
  const [piped, stored] = await Promise.allSettled([pipeline(body, counted), uploaded]);
  if (piped.status === "rejected") throw piped.reason;
  if (stored.status === "rejected") throw stored.reason;
  return size;
}
