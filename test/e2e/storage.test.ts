import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { promisify } from "node:util";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { REPO_ROOT } from "../../src/server/server.ts";
import {
  azuriteConnectionString,
  S3RVER_CREDENTIALS,
  s3BlobSettings,
  s3rverClient,
  startAzurite,
  startS3rver,
} from "../helpers/object-stores.ts";
import { spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";

const exec = promisify(execFile);

/** The example notebook through the CLI against a server whose blobs live in `env`'s store; returns the run id. */
async function runExample(t: TestContext, env: Record<string, string>): Promise<string> {
  const server = await spawnServer(env);
  t.after(() => stopServer(server));
  const out = await mkdtemp(join(tmpdir(), "hangar-storage-"));
  t.after(() => rm(out, { recursive: true, force: true }));
  const cli = (args: string[]) =>
    exec(join(REPO_ROOT, "hangar"), args, {
      env: { ...process.env, HANGAR_URL: server.url, HANGAR_API_KEY: TEST_API_KEY },
    });
  const submitted = await cli([
    "run",
    join(REPO_ROOT, "examples/sales-report.ipynb"),
    "--dataset",
    join(REPO_ROOT, "examples/data"),
    "-p",
    "region=west",
    "--wait",
    "--json",
  ]).catch((error: { stdout: string }) => error);
  const run = JSON.parse(submitted.stdout) as { id: string; status: string };
  assert.equal(run.status, "succeeded", submitted.stdout + server.output());
  await cli(["download", run.id, "--out", out]);
  const report = JSON.parse(await readFile(join(out, "output/report.json"), "utf8"));
  assert.equal(report.region, "west", "the agent read its inputs and wrote its outputs through the store");
  return run.id;
}

describe("a notebook run with its blobs in an object store", () => {
  it("runs end to end with S3 (s3rver): inputs, outputs and downloads go through presigned URLs", async (t) => {
    const s3 = await startS3rver();
    t.after(() => s3.close());
    const bucket = `hangar-e2e-${randomBytes(4).toString("hex")}`;
    const client = s3rverClient(s3.endpoint);
    t.after(() => client.destroy());
    const runId = await runExample(t, {
      ...(await s3BlobSettings(s3.endpoint, bucket)),
      HANGAR_BLOB_PREFIX: "hangar/",
    });
    const listed = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: `hangar/runs/${runId}/` }),
    );
    const keys = (listed.Contents ?? []).map((object) => object.Key);
    assert.ok(keys.includes(`hangar/runs/${runId}/output/report.json`), keys.join(", "));
    assert.ok(keys.includes(`hangar/runs/${runId}/executed.ipynb`), keys.join(", "));
  });

  it("runs end to end with Azure Blob (Azurite): inputs, outputs and downloads go through SAS URLs", async (t) => {
    const azurite = await startAzurite();
    t.after(() => azurite.close());
    await runExample(t, {
      HANGAR_BLOB_STORE: "azure",
      HANGAR_AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(azurite.endpoint),
      HANGAR_AZURE_CONTAINER: "hangar-e2e",
    });
  });

  it("refuses to start when the configured bucket cannot be reached, naming it", async (t) => {
    const s3 = await startS3rver();
    t.after(() => s3.close());
    await assert.rejects(
      spawnServer({
        HANGAR_BLOB_STORE: "s3",
        HANGAR_S3_BUCKET: "missing-bucket",
        HANGAR_S3_ENDPOINT: s3.endpoint,
        AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      }),
      /S3 bucket "missing-bucket" is not reachable/,
    );
  });
});
