import { Readable } from "node:stream";
import {
  BlobSASPermissions,
  BlobServiceClient,
  type ContainerClient,
  generateBlobSASQueryParameters,
  RestError,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import type { BlobObject, BlobStore, SignedMethod } from "../blob-store.ts";
import { assertSafeKey, assertSafePrefix } from "../keys.ts";
import { blobNotFound, byKeyBytes, checkExpiry, uploadCounting } from "../rules.ts";

/** Block size and parallel blocks of a streamed upload. */
const UPLOAD_BLOCK_BYTES = 4 * 1024 * 1024;
const UPLOAD_CONCURRENCY = 4;
/** Blobs deleted at once when a prefix is removed. */
const DELETE_CONCURRENCY = 16;

export interface AzureBlobStoreOptions {
  /**
   * A storage account connection string with its account key (`AccountName=…;AccountKey=…`), which
   * SAS URLs are signed with; Azurite's well-known development string works too.
   */
  connectionString: string;
  container: string;
  /** Every key is stored under this prefix (e.g. `hangar/`), so deployments can share a container. */
  keyPrefix?: string;
}

/**
 * Blobs as block blobs in one Azure Storage container. Signed URLs are service SAS URLs scoped to
 * one blob with read (GET) or create+write (PUT) permission, used against Azure directly.
 */
export class AzureBlobStore implements BlobStore {
  /** Azure's Put Blob needs the blob type named on every upload, signed or not. */
  readonly capabilities = {
    signedUrlsServedByApi: false,
    signedPutHeaders: { "x-ms-blob-type": "BlockBlob" },
  } as const;
  readonly #container: ContainerClient;
  readonly #credential: StorageSharedKeyCredential;
  readonly #prefix: string;

  constructor(options: AzureBlobStoreOptions) {
    const service = BlobServiceClient.fromConnectionString(options.connectionString);
    if (!(service.credential instanceof StorageSharedKeyCredential)) {
      throw new Error("The Azure connection string must carry an AccountKey: Hangar signs SAS URLs with it");
    }
    this.#credential = service.credential;
    this.#container = service.getContainerClient(options.container);
    this.#prefix = options.keyPrefix ?? "";
  }

  /** Creates the container when missing; fails with a message naming it when it cannot be reached. */
  async ensureContainer(): Promise<void> {
    try {
      await this.#container.createIfNotExists();
    } catch (err) {
      throw new Error(
        `Azure container "${this.#container.containerName}" is not reachable: ${describe(err)}`,
      );
    }
  }

  /** Blocks are staged and committed only once the body has ended, so a failed body changes nothing. */
  async put(key: string, body: Uint8Array | Readable): Promise<BlobObject> {
    const blob = this.#container.getBlockBlobClient(this.#blobName(key));
    if (body instanceof Uint8Array) {
      await blob.uploadData(body);
      return { key, size: body.length };
    }
    const size = await uploadCounting(body, (stream) =>
      blob.uploadStream(stream, UPLOAD_BLOCK_BYTES, UPLOAD_CONCURRENCY),
    );
    return { key, size };
  }

  async get(key: string): Promise<Readable> {
    try {
      const { readableStreamBody } = await this.#container.getBlobClient(this.#blobName(key)).download();
      if (!(readableStreamBody instanceof Readable))
        throw new Error(`Azure returned no readable body for ${key}`);
      return readableStreamBody;
    } catch (err) {
      if (isMissing(err)) throw blobNotFound(key);
      throw err;
    }
  }

  async stat(key: string): Promise<BlobObject | null> {
    try {
      const properties = await this.#container.getBlobClient(this.#blobName(key)).getProperties();
      return { key, size: properties.contentLength ?? 0 };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<BlobObject[]> {
    const objects: BlobObject[] = [];
    for await (const blob of this.#container.listBlobsFlat({
      prefix: this.#prefix + assertSafePrefix(prefix),
    })) {
      objects.push({ key: blob.name.slice(this.#prefix.length), size: blob.properties.contentLength ?? 0 });
    }
    return objects.sort(byKeyBytes);
  }

  async delete(keyOrPrefix: string): Promise<void> {
    if (!keyOrPrefix.endsWith("/")) {
      await this.#container.deleteBlob(this.#blobName(keyOrPrefix)).catch(ignoreMissing);
      return;
    }
    const names = (await this.list(keyOrPrefix)).map((object) => this.#prefix + object.key);
    for (let start = 0; start < names.length; start += DELETE_CONCURRENCY) {
      await Promise.all(
        names
          .slice(start, start + DELETE_CONCURRENCY)
          .map((name) => this.#container.deleteBlob(name).catch(ignoreMissing)),
      );
    }
  }

  /** Expiry is a whole second; no start time, so a client whose clock runs behind is not refused. */
  async signedUrl(key: string, method: SignedMethod, expiresInS: number): Promise<string> {
    const blobName = this.#blobName(key);
    checkExpiry(expiresInS);
    const sas = generateBlobSASQueryParameters(
      {
        containerName: this.#container.containerName,
        blobName,
        permissions: BlobSASPermissions.parse(method === "GET" ? "r" : "cw"),
        expiresOn: new Date((Math.floor(Date.now() / 1000) + expiresInS) * 1000),
      },
      this.#credential,
    );
    return `${this.#container.getBlobClient(blobName).url}?${sas.toString()}`;
  }

  #blobName(key: string): string {
    return this.#prefix + assertSafeKey(key);
  }
}

function isMissing(err: unknown): boolean {
  return err instanceof RestError && err.statusCode === 404;
}

function ignoreMissing(err: unknown): void {
  if (!isMissing(err)) throw err;
}

function describe(err: unknown): string {
  if (err instanceof RestError) return `${err.code ?? err.name} (HTTP ${err.statusCode ?? "?"})`;
  return err instanceof Error ? err.message : String(err);
}
