import { FsBlobStore, type FsBlobStoreOptions } from "./fs-blob-store.ts";

export { FsBlobStore, type FsBlobStoreOptions };

/** Entry point each adapter folder (`fs/`, `s3/`, `azure/`) exposes for the server's wiring. */
export function createFsBlobStore(options: FsBlobStoreOptions): FsBlobStore {
  return new FsBlobStore(options);
}
