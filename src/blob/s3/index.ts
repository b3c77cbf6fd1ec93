import { S3BlobStore, type S3BlobStoreOptions } from "./s3-blob-store.ts";

export { S3BlobStore, type S3BlobStoreOptions };

/** Entry point for the server's wiring: the store, once its bucket has answered. */
export async function createS3BlobStore(options: S3BlobStoreOptions): Promise<S3BlobStore> {
  const store = new S3BlobStore(options);
  await store.checkAccess();
  return store;
}
