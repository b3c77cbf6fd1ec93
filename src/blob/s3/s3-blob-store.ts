import { Readable } from "node:stream";
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  paginateListObjectsV2,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { BlobObject, BlobStore, SignedMethod } from "../blob-store.ts";
import { assertSafeKey, assertSafePrefix } from "../keys.ts";
import { blobNotFound, byKeyBytes, checkExpiry, uploadCounting } from "../rules.ts";

/** SigV4 presigned URLs live at most seven days. */
const MAX_PRESIGN_S = 7 * 24 * 3600;
/** DeleteObjects takes at most 1,000 keys per request. */
const DELETE_BATCH = 1_000;

export interface S3BlobStoreOptions {
  bucket: string;
  /** Every key is stored under this prefix (e.g. `hangar/`), so deployments can share a bucket. */
  keyPrefix?: string;
  region: string;
  /** An S3-compatible service (R2, B2, Wasabi, MinIO, …) instead of AWS. */
  endpoint?: string;
  /** `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`; most S3-compatible services need it. */
  forcePathStyle?: boolean;
  /** Explicit credentials; otherwise the AWS SDK's default chain (environment, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/**
 * Blobs as objects in one S3 bucket. Signed URLs are SigV4 presigned URLs that the client uses
 * against S3 directly, so a remote instance reaches its inputs and outputs without the API.
 */
export class S3BlobStore implements BlobStore {
  readonly capabilities = { signedUrlsServedByApi: false, signedPutHeaders: {} } as const;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(options: S3BlobStoreOptions) {
    this.#client = new S3Client({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      // Checksums only where S3 requires them: S3-compatible services reject the SDK's newer default
      // (CRC32 trailers on every upload), and a presigned PUT must not pin the checksum of no body.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
    this.#bucket = options.bucket;
    this.#prefix = options.keyPrefix ?? "";
  }

  /** Fails with a message naming the bucket when it is missing or these credentials cannot reach it. */
  async checkAccess(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }));
    } catch (err) {
      throw new Error(`S3 bucket "${this.#bucket}" is not reachable: ${describe(err)}`);
    }
  }

  /** Bodies of one part or less are sent in one request; larger ones as a multipart upload, which S3 discards when the body fails. */
  async put(key: string, body: Uint8Array | Readable): Promise<BlobObject> {
    const Key = this.#objectKey(key);
    if (body instanceof Uint8Array) {
      await this.#client.send(
        new PutObjectCommand({ Bucket: this.#bucket, Key, Body: body, ContentLength: body.length }),
      );
      return { key, size: body.length };
    }
    const size = await uploadCounting(body, (stream) =>
      new Upload({ client: this.#client, params: { Bucket: this.#bucket, Key, Body: stream } }).done(),
    );
    return { key, size };
  }

  async get(key: string): Promise<Readable> {
    try {
      const { Body } = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(key) }),
      );
      if (!(Body instanceof Readable)) throw new Error(`S3 returned no readable body for ${key}`);
      return Body;
    } catch (err) {
      if (isMissing(err)) throw blobNotFound(key);
      throw err;
    }
  }

  async stat(key: string): Promise<BlobObject | null> {
    try {
      const head = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(key) }),
      );
      return { key, size: head.ContentLength ?? 0 };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<BlobObject[]> {
    const objects: BlobObject[] = [];
    const pages = paginateListObjectsV2(
      { client: this.#client },
      { Bucket: this.#bucket, Prefix: this.#prefix + assertSafePrefix(prefix) },
    );
    for await (const page of pages) {
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        objects.push({ key: object.Key.slice(this.#prefix.length), size: object.Size ?? 0 });
      }
    }
    // S3 lists in UTF-8 byte order; not every S3-compatible service does.
    return objects.sort(byKeyBytes);
  }

  async delete(keyOrPrefix: string): Promise<void> {
    if (!keyOrPrefix.endsWith("/")) {
      await this.#client.send(
        new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(keyOrPrefix) }),
      );
      return;
    }
    const keys = (await this.list(keyOrPrefix)).map((object) => this.#prefix + object.key);
    for (let start = 0; start < keys.length; start += DELETE_BATCH) {
      const batch = keys.slice(start, start + DELETE_BATCH);
      const { Errors } = await this.#client.send(
        new DeleteObjectsCommand({
          Bucket: this.#bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      if (Errors?.length) {
        const first = Errors[0]!;
        throw new Error(
          `S3 could not delete ${Errors.length} object(s), e.g. ${first.Key}: ${first.Code} ${first.Message}`,
        );
      }
    }
  }

  async signedUrl(key: string, method: SignedMethod, expiresInS: number): Promise<string> {
    const Key = this.#objectKey(key);
    checkExpiry(expiresInS, MAX_PRESIGN_S);
    const command =
      method === "GET"
        ? new GetObjectCommand({ Bucket: this.#bucket, Key })
        : new PutObjectCommand({ Bucket: this.#bucket, Key });
    return getSignedUrl(this.#client, command, { expiresIn: expiresInS });
  }

  #objectKey(key: string): string {
    return this.#prefix + assertSafeKey(key);
  }
}

function isMissing(err: unknown): boolean {
  return (
    err instanceof S3ServiceException &&
    (err.name === "NoSuchKey" || err.name === "NotFound" || err.$metadata.httpStatusCode === 404)
  );
}

function describe(err: unknown): string {
  if (err instanceof S3ServiceException) return `${err.name} (HTTP ${err.$metadata.httpStatusCode ?? "?"})`;
  return err instanceof Error ? err.message : String(err);
}
