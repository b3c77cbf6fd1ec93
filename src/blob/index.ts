import type { BlobStoreSettings } from "../config.ts";
import { createAzureBlobStore } from "./azure/index.ts";
import type { BlobStore } from "./blob-store.ts";
import { createFsBlobStore, type FsBlobStoreOptions } from "./fs/index.ts";
import { createS3BlobStore } from "./s3/index.ts";

/** The store the settings name; the filesystem one needs the server's URL and signer. */
export async function openBlobStore(settings: BlobStoreSettings, fs: FsBlobStoreOptions): Promise<BlobStore> {
  switch (settings.kind) {
    case "fs":
      return createFsBlobStore(fs);
    case "s3":
      return createS3BlobStore({
        bucket: settings.bucket,
        region: settings.region,
        keyPrefix: settings.keyPrefix,
        ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
        ...(settings.forcePathStyle !== undefined ? { forcePathStyle: settings.forcePathStyle } : {}),
      });
    case "azure":
      return createAzureBlobStore({
        connectionString: settings.connectionString,
        container: settings.container,
        keyPrefix: settings.keyPrefix,
      });
  }
}
