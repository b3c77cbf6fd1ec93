import type { Readable } from "node:stream";

export type SignedMethod = "GET" | "PUT";

export interface BlobObject {
  key: string;
  size: number;
}

export interface BlobStoreCapabilities {
  /** Signed URLs point at this API's `/blobs/…` route, which must verify them (filesystem store). */
  readonly signedUrlsServedByApi: boolean;
  /** Headers a client must send along with a signed PUT URL (Azure names the blob type). */
  readonly signedPutHeaders: Readonly<Record<string, string>>;
}

/**
 * Object storage for notebooks, datasets and run artefacts. Keys are `/`-separated relative paths
 * built by the server (`notebooks/{id}/…`, `datasets/{id}/…`, `runs/{run_id}/…`); every adapter
 * rejects keys that could escape its root.
 */
export interface BlobStore {
  readonly capabilities: BlobStoreCapabilities;
  put(key: string, body: Uint8Array | Readable): Promise<BlobObject>;
  /** Throws HangarError 404 `blob_not_found` when absent. */
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<BlobObject | null>;
  /** Every object whose key starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<BlobObject[]>;
  /** Deletes one key, or everything under a prefix ending in `/`. Absent keys are not an error. */
  delete(keyOrPrefix: string): Promise<void>;
  /** A URL that allows exactly `method` on exactly `key` until `expiresInS` seconds from now. */
  signedUrl(key: string, method: SignedMethod, expiresInS: number): Promise<string>;
}
