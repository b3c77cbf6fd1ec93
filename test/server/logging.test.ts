import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { createLogger, redactSignature } from "../../src/server/logging.ts";

describe("server logging", () => {
  it("redacts the signature of a signed URL and keeps the rest of the query", () => {
    assert.equal(
      redactSignature("/blobs/runs/r1/output/a.csv?expires=1700000000&sig=abc123"),
      "/blobs/runs/r1/output/a.csv?expires=1700000000&sig=[redacted]",
    );
    assert.equal(redactSignature("/api/v1/runs/r1/logs?follow=1"), "/api/v1/runs/r1/logs?follow=1");
  });

  it("never writes a signature into a request log line", () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = createLogger("info", sink);
    const req = { method: "PUT", url: "/blobs/k?expires=9&sig=s3cr3t", headers: {} };
    log.info({ req }, "incoming request");
    const logged = JSON.parse(lines.join("")) as { req: { url: string; method: string } };
    assert.equal(logged.req.method, "PUT");
    assert.equal(logged.req.url, "/blobs/k?expires=9&sig=[redacted]");
    assert.doesNotMatch(lines.join(""), /s3cr3t/);
  });
});
