import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { downloadTo, TransferError, uploadFrom } from "../../src/agent/transfer.ts";
import { freePort } from "../helpers/server.ts";

describe("signed-URL transfers", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hangar-transfer-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("ride out a store that is down or answers 5xx for a while (a control-plane restart)", async () => {
    const port = await freePort();
    let calls = 0;
    const received: string[] = [];
    const server = createServer((request, response) => {
      calls++;
      if (calls === 1) {
        response.writeHead(503).end("restarting");
        return;
      }
      let body = "";
      request.on("data", (chunk) => {
        body += chunk;
      });
      request.on("end", () => {
        if (request.method === "PUT") received.push(body);
        response.writeHead(200).end(request.method === "GET" ? "downloaded" : "");
      });
    });
    // Nothing listens yet: the first attempts fail to connect.
    setTimeout(() => server.listen(port, "127.0.0.1"), 700);
    try {
      await writeFile(join(dir, "out.txt"), "uploaded");
      await uploadFrom(join(dir, "out.txt"), { url: `http://127.0.0.1:${port}/put` });
      assert.deepEqual(received, ["uploaded"]);
      assert.equal(calls, 2, "one 503, then the upload");
      await downloadTo(`http://127.0.0.1:${port}/get`, join(dir, "in.txt"));
      assert.equal(await readFile(join(dir, "in.txt"), "utf8"), "downloaded");
    } finally {
      server.close();
    }
  });

  it("fail at once on a refusal (an expired or altered URL is a 4xx)", async () => {
    const server = createServer((_request, response) => response.writeHead(403).end("signature_expired"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const started = Date.now();
      await assert.rejects(
        downloadTo(`http://127.0.0.1:${port}/x`, join(dir, "never.txt")),
        (error: unknown) => error instanceof TransferError && error.status === 403,
      );
      assert.ok(Date.now() - started < 1_000, "not retried");
    } finally {
      server.close();
    }
  });
});
