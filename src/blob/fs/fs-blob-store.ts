import { randomUUID } from "node:crypto";
import type { Dirent, ReadStream, Stats } from "node:fs";
import { constants, createWriteStream } from "node:fs";
import { lstat, mkdir, open, readdir, rename, rm, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badRequest, conflict, forbidden } from "../../domain/errors.ts";
import type { BlobObject, BlobStore, SignedMethod } from "../blob-store.ts";
import { assertSafeKey } from "../keys.ts";
import { blobNotFound, byKeyBytes, checkExpiry } from "../rules.ts";
import type { UrlSigner } from "../url-signer.ts";

/** In-progress writes live next to their target under this name; keys may not use it, `list` skips it. */
const TEMP_PREFIX = ".hangar-tmp-";

export interface FsBlobStoreOptions {
  /** Directory holding the objects; created on the first `put`. */
  root: string;
  /** Where clients reach this API (`https://host[:port][/path]`); a function because the server learns its port after listen. */
  publicBaseUrl: string | (() => string);
  signer: UrlSigner;
}

/**
 * Blobs as plain files under `root`, one file per key. Signed URLs point at the API's own
 * `/blobs/{key}` route, which must call `verifySignedRequest` before serving `get`/`put`.
 * Unlike object stores, a key cannot be both an object and a folder (`a` and `a/b`): such a `put`
 * answers 409 `blob_key_conflict`.
 */
export class FsBlobStore implements BlobStore {
  readonly capabilities = { signedUrlsServedByApi: true, signedPutHeaders: {} } as const;
  readonly #root: string;
  readonly #rootPrefix: string;
  readonly #publicBaseUrl: string | (() => string);
  readonly #signer: UrlSigner;

  constructor(options: FsBlobStoreOptions) {
    this.#root = path.resolve(options.root);
    this.#rootPrefix = this.#root.endsWith(path.sep) ? this.#root : this.#root + path.sep;
    this.#publicBaseUrl = options.publicBaseUrl;
    this.#signer = options.signer;
  }

  /** Writes to a temp file beside the target, then renames, so readers see the old or new object, never a partial one. */
  async put(key: string, body: Uint8Array | Readable): Promise<BlobObject> {
    const target = this.#resolve(key);
    const dir = path.dirname(target);
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      if (isErrno(err, "ENOTDIR", "EEXIST"))
        throw keyConflict(key, "a parent folder of it is already an object");
      throw err;
    }
    const temp = path.join(dir, `${TEMP_PREFIX}${randomUUID()}`);
    // `flush` fsyncs before close, so a crash after the rename cannot leave an empty object behind.
    const out = createWriteStream(temp, { flags: "wx", flush: true });
    try {
      await pipeline(body instanceof Uint8Array ? Readable.from([body]) : body, out);
      await rename(temp, target);
    } catch (err) {
      // pipeline settles only after `out` has closed, so the temp file can no longer reappear.
      await rm(temp, { force: true });
      if (isErrno(err, "EISDIR")) throw keyConflict(key, "it is already a folder of other objects");
      throw err;
    }
    return { key, size: out.bytesWritten };
  }

  async get(key: string): Promise<ReadStream> {
    const target = this.#resolve(key);
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      // O_NOFOLLOW: a symlink planted under root must not serve a file from elsewhere.
      handle = await open(target, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR", "ELOOP")) throw blobNotFound(key);
      throw err;
    }
    try {
      if (!(await handle.stat()).isFile()) throw blobNotFound(key);
    } catch (err) {
      await handle.close();
      throw err;
    }
    return handle.createReadStream();
  }

  async stat(key: string): Promise<BlobObject | null> {
    const info = await lstatOrNull(this.#resolve(key));
    return info?.isFile() ? { key, size: info.size } : null;
  }

  /** Walks only the folder part of `prefix` (`datasets/ds_1/da` walks `datasets/ds_1`), sorted in UTF-8 byte order as S3 lists. */
  async list(prefix: string): Promise<BlobObject[]> {
    const slash = prefix.lastIndexOf("/");
    const dir = slash < 0 ? this.#root : this.#resolve(prefix.slice(0, slash));
    let entries: Dirent[];
    try {
      // Recursive readdir reports symlinks as such and does not descend into them.
      entries = await readdir(dir, { withFileTypes: true, recursive: true });
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) return [];
      throw err;
    }
    const objects: BlobObject[] = [];
    for (const entry of entries) {
      if (!entry.isFile() || entry.name.startsWith(TEMP_PREFIX)) continue;
      const file = path.join(entry.parentPath, entry.name);
      const key = path.relative(this.#root, file).split(path.sep).join("/");
      if (!key.startsWith(prefix)) continue;
      // A concurrent delete may have removed it since readdir.
      const info = await lstatOrNull(file);
      if (info?.isFile()) objects.push({ key, size: info.size });
    }
    return objects.sort(byKeyBytes);
  }

  async delete(keyOrPrefix: string): Promise<void> {
    if (keyOrPrefix.endsWith("/")) {
      const dir = this.#resolve(keyOrPrefix.slice(0, -1));
      // `a/` must not remove an object named `a`.
      if ((await lstatOrNull(dir))?.isDirectory()) await rm(dir, { recursive: true, force: true });
      return;
    }
    const target = this.#resolve(keyOrPrefix);
    if (!(await lstatOrNull(target))?.isFile()) return;
    try {
      await unlink(target);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
  }

  /** The expiry is rounded down to a whole second, so the URL never outlives `expiresInS`. */
  async signedUrl(key: string, method: SignedMethod, expiresInS: number): Promise<string> {
    this.#resolve(key);
    checkExpiry(expiresInS);
    const expiresAt = Math.floor(Date.now() / 1000) + expiresInS;
    const base = typeof this.#publicBaseUrl === "function" ? this.#publicBaseUrl() : this.#publicBaseUrl;
    const encodedKey = key.split("/").map(encodeURIComponent).join("/");
    return `${base.replace(/\/+$/, "")}/blobs/${encodedKey}?${this.#signer.query(method, key, expiresAt)}`;
  }

  /**
   * For the API's `/blobs/{key}` route: throws 400 for an unsafe key, else 403 `signature_invalid`
   * or `signature_expired` unless the query authorises exactly this `method` on exactly this `key`.
   */
  verifySignedRequest(
    method: string,
    key: string,
    expires: string | undefined,
    sig: string | undefined,
  ): void {
    this.#resolve(key);
    this.#signer.verify(method, key, expires, sig);
  }

  /** Validates `key` and maps it to a path, checking the result really lies under root (defense in depth). */
  #resolve(key: string): string {
    const segments = assertSafeKey(key).split("/");
    if (segments.some((segment) => segment.startsWith(TEMP_PREFIX))) {
      throw badRequest(
        "unsafe_blob_key",
        `Blob key ${JSON.stringify(key)} is not allowed: names starting with "${TEMP_PREFIX}" are reserved for writes in progress.`,
        { key },
      );
    }
    const resolved = path.resolve(this.#root, ...segments);
    if (!resolved.startsWith(this.#rootPrefix)) {
      throw forbidden(
        "blob_key_outside_root",
        `Blob key ${JSON.stringify(key)} resolves outside the blob store.`,
      );
    }
    return resolved;
  }
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && "code" in err && typeof err.code === "string" && codes.includes(err.code);
}

async function lstatOrNull(file: string): Promise<Stats | null> {
  try {
    return await lstat(file);
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return null;
    throw err;
  }
}

function keyConflict(key: string, why: string) {
  return conflict("blob_key_conflict", `Cannot store blob ${JSON.stringify(key)}: ${why}.`, { key });
}
