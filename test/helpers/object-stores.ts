import { type ChildProcess, spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { REPO_ROOT } from "../../src/server/server.ts";
import { freePort } from "./server.ts";

/** A local object-store server the tests start: an S3-compatible one (s3rver) or Azurite. */
export interface ObjectStoreServer {
  endpoint: string;
  close(): Promise<void>;
}

/** s3rver's fixed credentials. */
export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

/** An S3 client for s3rver at `endpoint`. */
export function s3rverClient(endpoint: string): S3Client {
  return new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
  });
}

/** A server's settings for blobs in a new bucket of s3rver at `endpoint`. */
export async function s3BlobSettings(endpoint: string, bucket: string): Promise<Record<string, string>> {
  const client = s3rverClient(endpoint);
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  client.destroy();
  return {
    HANGAR_BLOB_STORE: "s3",
    HANGAR_S3_BUCKET: bucket,
    HANGAR_S3_ENDPOINT: endpoint,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };
}

/** Azurite's documented development account (public, the same on every installation). */
const AZURITE_ACCOUNT = "devstoreaccount1";
const AZURITE_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export function azuriteConnectionString(endpoint: string): string {
  return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint}/${AZURITE_ACCOUNT};`;
}

/**
 * s3rver on a free port, storing under a temp folder; buckets are created by the tests. s3rver
 * checks a presigned URL's expiry but not its SigV4 signature, so it sits behind a front that
 * checks presigned requests as S3 does (AWS docs, "Authenticating Requests: Using Query
 * Parameters") and forwards everything to it.
 */
export async function startS3rver(): Promise<ObjectStoreServer> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-s3rver-"));
  const port = await freePort();
  const child = spawn(
    join(REPO_ROOT, "node_modules/.bin/s3rver"),
    ["--directory", dir, "--address", "127.0.0.1", "--port", String(port), "--silent"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const s3rver = await started(child, port, `http://127.0.0.1:${port}`, () =>
    rm(dir, { recursive: true, force: true }),
  );
  const front = createHttpServer((request, response) => {
    const refusal = presignRefusal(request, S3RVER_CREDENTIALS.secretAccessKey);
    if (refusal) {
      response.writeHead(403, { "content-type": "application/xml" });
      response.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${refusal}</Code></Error>`);
      return;
    }
    const forwarded = httpRequest(
      { host: "127.0.0.1", port, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forwarded.on("error", () => response.destroy());
    request.pipe(forwarded);
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  const { port: frontPort } = front.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${frontPort}`,
    close: async () => {
      front.closeAllConnections();
      await new Promise((resolve) => front.close(resolve));
      await s3rver.close();
    },
  };
}

/** Why S3 would refuse this presigned request (`AccessDenied`, `SignatureDoesNotMatch`), or null. */
function presignRefusal(request: IncomingMessage, secret: string): string | null {
  const url = new URL(request.url ?? "/", "http://front");
  const signature = url.searchParams.get("X-Amz-Signature");
  if (signature === null) return null;
  const amzDate = url.searchParams.get("X-Amz-Date") ?? "";
  const [, date, region, service] = (url.searchParams.get("X-Amz-Credential") ?? "").split("/");
  const signedAt = Date.parse(
    amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z"),
  );
  const expiresS = Number(url.searchParams.get("X-Amz-Expires"));
  if (!(Date.now() <= signedAt + expiresS * 1000)) return "AccessDenied";
  const encode = (text: string) =>
    encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const query = [...url.searchParams]
    .filter(([name]) => name !== "X-Amz-Signature")
    .map(([name, value]) => `${encode(name)}=${encode(value)}`)
    .sort()
    .join("&");
  const signedHeaders = url.searchParams.get("X-Amz-SignedHeaders") ?? "";
  const headers = signedHeaders
    .split(";")
    .map((name) => `${name}:${String(request.headers[name] ?? "").trim()}\n`)
    .join("");
  const rawPath = (request.url ?? "/").split("?")[0]!;
  const canonical = [request.method, rawPath, query, headers, signedHeaders, "UNSIGNED-PAYLOAD"].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonical)].join("\n");
  let key: Buffer = Buffer.from(`AWS4${secret}`);
  for (const part of [date, region, service, "aws4_request"]) key = hmac(key, part ?? "");
  return hmac(key, toSign).toString("hex") === signature ? null : "SignatureDoesNotMatch";
}

const hmac = (key: Buffer, text: string) => createHmac("sha256", key).update(text).digest();
const sha256Hex = (text: string) => createHash("sha256").update(text).digest("hex");

/** Azurite's blob service on a free port, storing under a temp folder. */
export async function startAzurite(): Promise<ObjectStoreServer> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-azurite-"));
  const port = await freePort();
  const child = spawn(
    join(REPO_ROOT, "node_modules/.bin/azurite-blob"),
    [
      "--blobHost",
      "127.0.0.1",
      "--blobPort",
      String(port),
      // Its debug log and extent files land here; the metadata stays in memory.
      "--location",
      dir,
      "--silent",
      // The SDK may speak a newer service version than this Azurite knows; the calls used here are old.
      "--skipApiVersionCheck",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return started(child, port, `http://127.0.0.1:${port}`, () => rm(dir, { recursive: true, force: true }));
}

async function started(
  child: ChildProcess,
  port: number,
  endpoint: string,
  cleanup: () => Promise<void>,
): Promise<ObjectStoreServer> {
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const close = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    await cleanup();
  };
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) {
      await cleanup();
      throw new Error(`${child.spawnfile} exited with ${child.exitCode}: ${stderr}`);
    }
    if (await accepts(port)) return { endpoint, close };
    await sleep(100);
  }
  await close();
  throw new Error(`${child.spawnfile} did not listen on ${port}: ${stderr}`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
