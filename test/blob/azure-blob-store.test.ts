import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type AzureBlobStoreOptions, createAzureBlobStore } from "../../src/blob/azure/index.ts";
import { azuriteConnectionString, type ObjectStoreServer, startAzurite } from "../helpers/object-stores.ts";
import { runBlobStoreConformance } from "./conformance.ts";

let server: ObjectStoreServer;
before(async () => {
  server = await startAzurite();
});
after(() => server.close());

/** Options of a store on a container of its own, created by the store. */
function containerOptions(): AzureBlobStoreOptions {
  return {
    connectionString: azuriteConnectionString(server.endpoint),
    container: `hangar-${randomBytes(6).toString("hex")}`,
  };
}

runBlobStoreConformance("azure (Azurite)", async () => {
  const options = containerOptions();
  const store = await createAzureBlobStore({ ...options, keyPrefix: "deployment/" });
  return {
    store,
    fetchSigned: (url, init) => fetch(url, init),
    cleanup: async () => {},
    storeWithPrefix: (keyPrefix) => createAzureBlobStore({ ...options, keyPrefix }),
  };
});

describe("AzureBlobStore", () => {
  it("refuses a connection string without an account key, since SAS URLs are signed with it", async () => {
    await assert.rejects(
      () =>
        createAzureBlobStore({
          connectionString: `BlobEndpoint=${server.endpoint}/devstoreaccount1;SharedAccessSignature=sv=2020-08-04&sig=x`,
          container: "c",
        }),
      /must carry an AccountKey/,
    );
  });
});
