import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { createS3BlobStore, type S3BlobStoreOptions } from "../../src/blob/s3/index.ts";
import { type ObjectStoreServer, S3RVER_CREDENTIALS, startS3rver } from "../helpers/object-stores.ts";
import { runBlobStoreConformance } from "./conformance.ts";

let server: ObjectStoreServer;
before(async () => {
  server = await startS3rver();
});
after(() => server.close());

/** A fresh bucket on the test server, and the options of a store on it. */
async function bucketOptions(): Promise<S3BlobStoreOptions> {
  const bucket = `hangar-${randomBytes(6).toString("hex")}`;
  const admin = new S3Client({
    region: "us-east-1",
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
  });
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  admin.destroy();
  return { bucket, region: "us-east-1", endpoint: server.endpoint, credentials: S3RVER_CREDENTIALS };
}

runBlobStoreConformance("s3 (s3rver)", async () => {
  const options = await bucketOptions();
  const store = await createS3BlobStore({ ...options, keyPrefix: "deployment/" });
  return {
    store,
    fetchSigned: (url, init) => fetch(url, init),
    cleanup: async () => {},
    storeWithPrefix: (keyPrefix) => createS3BlobStore({ ...options, keyPrefix }),
  };
});

describe("S3BlobStore", () => {
  it("refuses to start on a bucket that does not exist, naming it", async () => {
    const options = await bucketOptions();
    await assert.rejects(
      createS3BlobStore({ ...options, bucket: "no-such-bucket-here" }),
      /S3 bucket "no-such-bucket-here" is not reachable/,
    );
  });
});
