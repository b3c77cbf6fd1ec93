import { AzureBlobStore, type AzureBlobStoreOptions } from "./azure-blob-store.ts";

export { AzureBlobStore, type AzureBlobStoreOptions };

/** Entry point for the server's wiring: the store, with its container created when missing. */
export async function createAzureBlobStore(options: AzureBlobStoreOptions): Promise<AzureBlobStore> {
  const store = new AzureBlobStore(options);
  await store.ensureContainer();
  return store;
}
