import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import type { FsBlobStore } from "../../src/blob/fs/fs-blob-store.ts";
import { HangarError } from "../../src/domain/errors.ts";

export interface FsSignedServer {
  /** `http://127.0.0.1:{port}`, to hand to the store as its `publicBaseUrl`. */
  readonly baseUrl: string;
  close(): Promise<void>;
}

/**
 * A bare `node:http` server with only the `/blobs/{key}` route the API serves for the filesystem
 * store: verify the signature for the request's own method and key, then stream `get` or `put`.
 */
export async function startFsSignedServer(store: FsBlobStore): Promise<FsSignedServer> {
  const server = createServer((req, res) => {
    handle(store, req, res).catch((err: unknown) => sendError(res, err));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // fetch keeps connections alive; without this close() waits for them to time out.
        server.closeAllConnections();
      }),
  };
}

async function handle(store: FsBlobStore, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // The raw path, not `new URL(...).pathname`: URL parsing would resolve `..` before the key check sees it.
  const [rawPath = "", rawQuery = ""] = (req.url ?? "").split("?", 2);
  if (!rawPath.startsWith("/blobs/"))
    return sendJson(res, 404, { code: "not_found", message: "No such route." });
  let key: string;
  try {
    key = rawPath.slice("/blobs/".length).split("/").map(decodeURIComponent).join("/");
  } catch {
    return sendJson(res, 400, {
      code: "unsafe_blob_key",
      message: "The blob path is not valid percent-encoding.",
    });
  }
  const query = new URLSearchParams(rawQuery);
  const method = req.method ?? "";
  store.verifySignedRequest(method, key, query.get("expires") ?? undefined, query.get("sig") ?? undefined);
  if (method === "GET") {
    const body = await store.get(key);
    res.writeHead(200, { "content-type": "application/octet-stream" });
    await pipeline(body, res);
  } else {
    // Only GET and PUT are ever signed, so any other method already failed verification.
    sendJson(res, 200, await store.put(key, req));
  }
}

function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof HangarError) sendJson(res, err.status, { code: err.code, message: err.message });
  else sendJson(res, 500, { code: "internal", message: String(err) });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
