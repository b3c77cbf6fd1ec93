import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UrlSigner } from "../../src/blob/url-signer.ts";
import type { DownloadView, RunView } from "../../src/cli/client.ts";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";

const MAX_UPLOAD = 200_000;

// ---------------------------------------------------------------------------------------------
// Fixture helpers
// ---------------------------------------------------------------------------------------------

interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

interface Call {
  method?: string;
  /** `null` sends no Authorization header at all. */
  key?: string | null;
  headers?: Record<string, string>;
  body?: RequestInit["body"];
  /** Serialised as JSON with a JSON content type. */
  json?: unknown;
}

function notebookJson(cells: string[] = ["print('hello')"]): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
    cells: cells.map((source, i) => ({
      id: `cell-${i}`,
      cell_type: "code",
      metadata: i === 0 && source.startsWith("# parameters") ? { tags: ["parameters"] } : {},
      source,
      outputs: [],
      execution_count: null,
    })),
  });
}

interface Part {
  field?: string;
  /** Raw bytes of the filename parameter; omitted for a plain field. */
  filename?: string | Buffer;
  content: string | Buffer;
  contentType?: string;
}

/** A multipart body built byte by byte, so file names reach the server exactly as written here. */
function multipart(parts: Part[]): { body: Buffer; contentType: string } {
  const boundary = `----hangar-test-${randomBytes(8).toString("hex")}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const field = part.field ?? "file";
    const disposition =
      part.filename === undefined
        ? Buffer.from(`form-data; name="${field}"`)
        : Buffer.concat([
            Buffer.from(`form-data; name="${field}"; filename="`),
            Buffer.isBuffer(part.filename) ? part.filename : Buffer.from(part.filename),
            Buffer.from('"'),
          ]);
    chunks.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: `),
      disposition,
      Buffer.from(
        `\r\n${part.filename === undefined ? "" : `Content-Type: ${part.contentType ?? "application/octet-stream"}\r\n`}\r\n`,
      ),
      Buffer.isBuffer(part.content) ? part.content : Buffer.from(part.content),
      Buffer.from("\r\n"),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

async function listFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

function assertError(answer: Answer, status: number, code: string, message?: RegExp): ErrorBody["error"] {
  assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status}: ${answer.text}`);
  const body = answer.json as ErrorBody | null;
  assert.ok(body && typeof body === "object" && "error" in body, `not an error body: ${answer.text}`);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "details", "message"]);
  assert.equal(body.error.code, code, answer.text);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0);
  if (message) assert.match(body.error.message, message);
  return body.error;
}

/** Raw HTTP with the path sent exactly as given (fetch would resolve `..` and `%2e%2e` away). */
function rawRequest(
  url: string,
  method: string,
  path: string,
  body?: Buffer,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------

describe("HTTP API contract (one real server)", { concurrency: 1 }, () => {
  let server: ServerProcess;
  let blobsRoot: string;

  const call = async (path: string, options: Call = {}): Promise<Answer> => {
    const headers: Record<string, string> = { ...options.headers };
    const key = options.key === undefined ? TEST_API_KEY : options.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let body = options.body;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers["content-type"] = "application/json";
    }
    const response = await fetch(`${server.url}${path}`, { method: options.method ?? "GET", headers, body });
    const text = await response.text();
    let json: unknown = null;
    if ((response.headers.get("content-type") ?? "").includes("json") && text) json = JSON.parse(text);
    return { status: response.status, headers: response.headers, text, json };
  };

  const postMultipart = (path: string, parts: Part[]) => {
    const { body, contentType } = multipart(parts);
    return call(path, { method: "POST", body, headers: { "content-type": contentType } });
  };

  const ids = async (path: string, field: "notebooks" | "datasets" | "runs") => {
    const answer = await call(`${path}?limit=1000`);
    assert.equal(answer.status, 200, answer.text);
    return (answer.json as Record<string, { id: string }[]>)[field]!.map((x) => x.id).sort();
  };

  /** What a rejected request must leave unchanged: list endpoints and files in the blob store. */
  const snapshot = async () => ({
    notebooks: await ids("/api/v1/notebooks", "notebooks"),
    datasets: await ids("/api/v1/datasets", "datasets"),
    runs: await ids("/api/v1/runs", "runs"),
    notebookFiles: await listFiles(join(blobsRoot, "notebooks")),
    datasetFiles: await listFiles(join(blobsRoot, "datasets")),
    runFiles: await listFiles(join(blobsRoot, "runs")),
  });

  /** Runs `reject` and checks that nothing new was stored. */
  const assertNothingStored = async (reject: () => Promise<void>) => {
    const before = await snapshot();
    await reject();
    assert.deepEqual(await snapshot(), before, "a rejected request must store nothing");
  };

  let notebookId = "";

  before(async () => {
    server = await spawnServer({
      HANGAR_MAX_UPLOAD_BYTES: String(MAX_UPLOAD),
      // One instance: a run submitted while another runs stays queued, so it can be cancelled there.
      HANGAR_LOCAL_MAX_INSTANCES: "1",
    });
    blobsRoot = join(server.dataDir, "blobs");
  });
  after(async () => {
    if (server) await stopServer(server);
  });

  describe("authentication", () => {
    it("answers 401 unauthorized without an API key", async () => {
      for (const path of ["/api/v1/notebooks", "/api/v1/runs", "/api/v1/datasets/ds_x"]) {
        assertError(await call(path, { key: null }), 401, "unauthorized", /missing credentials/i);
      }
      const upload = multipart([{ filename: "a.ipynb", content: notebookJson() }]);
      const answer = await call("/api/v1/notebooks", {
        method: "POST",
        key: null,
        body: upload.body,
        headers: { "content-type": upload.contentType },
      });
      assertError(answer, 401, "unauthorized", /api key or access token/i);
    });

    it("answers 401 unauthorized with a wrong API key or a non-Bearer scheme", async () => {
      assertError(await call("/api/v1/notebooks", { key: "hgr_wrong" }), 401, "unauthorized", /invalid/i);
      const basic = await call("/api/v1/notebooks", {
        key: null,
        headers: { authorization: `Basic ${Buffer.from(`x:${TEST_API_KEY}`).toString("base64")}` },
      });
      assertError(basic, 401, "unauthorized", /api key/i);
    });

    it("serves /healthz without a key", async () => {
      const answer = await call("/healthz", { key: null });
      assert.equal(answer.status, 200);
      assert.equal((answer.json as { status: string }).status, "ok");
    });
  });

  describe("notebook upload", () => {
    it("rejects a file that is not JSON with 400 invalid_notebook", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/notebooks", [{ filename: "x.ipynb", content: "{nope" }]);
        assertError(answer, 400, "invalid_notebook", /x\.ipynb is not JSON/);
      });
    });

    it("rejects JSON that is not a notebook with 400 invalid_notebook", async () => {
      const cases: [string, RegExp][] = [
        ["[1, 2, 3]", /expected a JSON object/],
        ['"just a string"', /expected a JSON object/],
        ["null", /expected a JSON object/],
        ['{"cells": []}', /nbformat/],
        ['{"nbformat": "4", "cells": []}', /nbformat/],
        ['{"nbformat": 4, "cells": {}}', /"cells" is not a list/],
        ['{"nbformat": 4}', /"cells" is not a list/],
      ];
      await assertNothingStored(async () => {
        for (const [content, message] of cases) {
          const answer = await postMultipart("/api/v1/notebooks", [{ filename: "bad.ipynb", content }]);
          assertError(answer, 400, "invalid_notebook", message);
        }
      });
    });

    it("rejects nbformat 3 with 422 unsupported_nbformat", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/notebooks", [
          { filename: "old.ipynb", content: JSON.stringify({ nbformat: 3, worksheets: [] }) },
        ]);
        const error = assertError(answer, 422, "unsupported_nbformat", /nbformat 3/);
        assert.deepEqual(error.details, { nbformat: 3 });
      });
    });

    it("rejects a file name that is not .ipynb with 400", async () => {
      await assertNothingStored(async () => {
        for (const filename of ["notes.txt", "notebook.ipynb.json", "ipynb"]) {
          const answer = await postMultipart("/api/v1/notebooks", [{ filename, content: notebookJson() }]);
          assertError(
            answer,
            400,
            "invalid_notebook",
            new RegExp(`${filename.replaceAll(".", "\\.")}.*\\.ipynb`),
          );
        }
      });
    });

    it("rejects a notebook file name with a NUL byte or a `..` with 400 unsafe_file_name", async () => {
      for (const filename of [Buffer.from("a\u0000.ipynb"), "../up.ipynb"]) {
        await assertNothingStored(async () => {
          const answer = await postMultipart("/api/v1/notebooks", [{ filename, content: notebookJson() }]);
          assertError(answer, 400, "unsafe_file_name", /is not allowed/);
        });
      }
    });

    it("rejects a notebook over the upload limit with 413 payload_too_large", async () => {
      const big = notebookJson([`x = "${"a".repeat(MAX_UPLOAD + 10)}"`]);
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/notebooks", [{ filename: "big.ipynb", content: big }]);
        assertError(answer, 413, "payload_too_large", /large/i);
      });
    });

    it("rejects a body that is not multipart with a stable 4xx code", async () => {
      await assertNothingStored(async () => {
        const asJson = await call("/api/v1/notebooks", { method: "POST", json: JSON.parse(notebookJson()) });
        assertError(asJson, 400, "not_multipart", /multipart/);
        const asText = await call("/api/v1/notebooks", {
          method: "POST",
          body: notebookJson(),
          headers: { "content-type": "text/plain" },
        });
        assertError(asText, 400, "not_multipart", /multipart/);
        const asOther = await call("/api/v1/notebooks", {
          method: "POST",
          body: notebookJson(),
          headers: { "content-type": "application/x-ipynb+json" },
        });
        assertError(asOther, 415, "unsupported_media_type");
      });
    });

    it("rejects a multipart body without a file with 400 no_files", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/notebooks", [{ field: "name", content: "x" }]);
        assertError(answer, 400, "no_files", /notebook/);
      });
    });

    it("stores a valid notebook (201) and serves it by id and in the list", async () => {
      const before = await snapshot();
      const form = new FormData();
      form.append("file", new Blob([notebookJson(["a = 1", "print(a)", "a + 1"])]), "good.ipynb");
      const answer = await call("/api/v1/notebooks", { method: "POST", body: form });
      assert.equal(answer.status, 201, answer.text);
      const view = answer.json as {
        id: string;
        name: string;
        cells: number;
        size: number;
        created_at: string;
      };
      assert.match(view.id, /^nb_/);
      assert.equal(view.name, "good.ipynb");
      assert.equal(view.cells, 3);
      assert.ok(view.size > 0);
      notebookId = view.id;

      const got = await call(`/api/v1/notebooks/${view.id}`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.json, view);
      assert.deepEqual(await ids("/api/v1/notebooks", "notebooks"), [...before.notebooks, view.id].sort());
      const stored = await listFiles(join(blobsRoot, "notebooks"));
      assert.deepEqual(
        stored,
        [...before.notebookFiles, join(blobsRoot, "notebooks", view.id, "notebook.ipynb")].sort(),
      );
    });

    it("answers 404 notebook_not_found for an unknown id", async () => {
      const answer = await call("/api/v1/notebooks/nb_does_not_exist");
      assertError(answer, 404, "notebook_not_found", /nb_does_not_exist/);
      assertError(
        await call("/api/v1/notebooks/nb_does_not_exist/runs"),
        404,
        "notebook_not_found",
        /nb_does_not_exist/,
      );
    });
  });

  describe("dataset upload", () => {
    it("stores one file (201) with its path and size", async () => {
      const answer = await postMultipart("/api/v1/datasets", [{ filename: "a.csv", content: "x,y\n1,2\n" }]);
      assert.equal(answer.status, 201, answer.text);
      const view = answer.json as {
        id: string;
        name: string;
        files: { path: string; size: number }[];
        total_size: number;
      };
      assert.match(view.id, /^ds_/);
      assert.deepEqual(view.files, [{ path: "a.csv", size: 8 }]);
      assert.equal(view.total_size, 8);
      assert.equal(view.name, "a.csv");
    });

    it("stores many files including a sub-folder, under their paths", async () => {
      const answer = await postMultipart("/api/v1/datasets", [
        { field: "name", content: "my-data" },
        { filename: "a.csv", content: "1234" },
        { filename: "sub/b.csv", content: "123456" },
        { filename: "sub/deeper/c.txt", content: "" },
      ]);
      assert.equal(answer.status, 201, answer.text);
      const view = answer.json as {
        id: string;
        name: string;
        files: { path: string; size: number }[];
        total_size: number;
      };
      assert.equal(view.name, "my-data");
      assert.deepEqual(view.files, [
        { path: "a.csv", size: 4 },
        { path: "sub/b.csv", size: 6 },
        { path: "sub/deeper/c.txt", size: 0 },
      ]);
      assert.equal(view.total_size, 10);
      const got = await call(`/api/v1/datasets/${view.id}`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.json, view);
      assert.ok((await ids("/api/v1/datasets", "datasets")).includes(view.id));
      assert.equal(await readFile(join(blobsRoot, "datasets", view.id, "sub", "b.csv"), "utf8"), "123456");
    });

    it("rejects unsafe file names with 400 unsafe_file_name, storing nothing even after a good file", async () => {
      const escapeName = `hangar-escape-${randomBytes(4).toString("hex")}.csv`;
      const cases: [string | Buffer, RegExp][] = [
        [`../${escapeName}`, /"\.\."/],
        [`../../../../${escapeName}`, /"\.\."/],
        [`sub/../../${escapeName}`, /"\.\."/],
        ["..", /"\.\."/],
        ["./a.csv", /"\."/],
        ["/etc/passwd", /starts with "\/"/],
        [`/tmp/${escapeName}`, /starts with "\/"/],
        [`..\\..\\${escapeName}`, /backslash/],
        ["sub\\a.csv", /backslash/],
        ["C:/windows/a.csv", /drive letter/],
        [Buffer.from("a\u0000.csv"), /control character U\+0000/],
        ["sub//a.csv", /empty/],
        ["sub/", /empty/],
      ];
      for (const [filename, message] of cases) {
        await assertNothingStored(async () => {
          const answer = await postMultipart("/api/v1/datasets", [
            { filename: "good.csv", content: "good first" },
            { filename: "sub/also-good.csv", content: "good too" },
            { filename, content: "evil" },
            { filename: "after.csv", content: "never reached" },
          ]);
          const error = assertError(answer, 400, "unsafe_file_name", message);
          assert.match(error.message, /is not allowed/);
          assert.equal(typeof (error.details as { name: unknown }).name, "string");
          // The bad name alone, as the only file, is rejected the same way.
          const alone = await postMultipart("/api/v1/datasets", [{ filename, content: "evil" }]);
          assertError(alone, 400, "unsafe_file_name", message);
        });
      }
      // Nothing was written outside the blob root either.
      const outside = [server.dataDir, dirname(server.dataDir), join(blobsRoot, "datasets"), "/tmp", "/etc"];
      for (const dir of outside)
        assert.equal(existsSync(join(dir, escapeName)), false, `${dir}/${escapeName}`);
      const stray: string[] = [];
      for (const file of await listFiles(server.dataDir)) {
        if (file.includes("hangar-escape")) stray.push(file);
        else if (file.startsWith(blobsRoot) && (await readFile(file, "utf8")) === "evil") stray.push(file);
      }
      assert.deepEqual(stray, [], "no trace of the refused files anywhere in the data dir");
    });

    it("rejects a file over the upload limit with 413, storing nothing", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/datasets", [
          { filename: "small.csv", content: "small" },
          { filename: "huge.bin", content: Buffer.alloc(MAX_UPLOAD + 1000, 7) },
        ]);
        const error = assertError(answer, 413, "payload_too_large", /huge\.bin.*200000/);
        assert.deepEqual(error.details, { limit: MAX_UPLOAD });
      });
      // Temp files of the aborted write are gone too.
      const temps = (await listFiles(blobsRoot)).filter((f) => f.includes(".hangar-tmp-"));
      assert.deepEqual(temps, []);
    });

    it("rejects an upload with zero files with 400 no_files", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/datasets", [{ field: "name", content: "empty" }]);
        assertError(answer, 400, "no_files", /no files/);
        const notMultipart = await call("/api/v1/datasets", { method: "POST", json: { files: [] } });
        assertError(notMultipart, 400, "not_multipart", /multipart/);
      });
    });

    it("rejects a duplicate name in one upload with 409, storing nothing", async () => {
      await assertNothingStored(async () => {
        const answer = await postMultipart("/api/v1/datasets", [
          { filename: "a.csv", content: "one" },
          { filename: "sub/b.csv", content: "two" },
          { filename: "a.csv", content: "three" },
        ]);
        const error = assertError(answer, 409, "duplicate_file_name", /"a\.csv" twice/);
        assert.deepEqual(error.details, { name: "a.csv" });
      });
    });

    it("rejects a dataset name with control characters with 400 invalid_dataset_name", async () => {
      for (const name of ["bad\u0000name", "two\nlines", " ", "n".repeat(201)]) {
        await assertNothingStored(async () => {
          const answer = await postMultipart("/api/v1/datasets", [
            { field: "name", content: name },
            { filename: "a.csv", content: "x\n1\n" },
          ]);
          assertError(answer, 400, "invalid_dataset_name", /control characters/);
        });
      }
    });

    it("answers 404 dataset_not_found for an unknown id", async () => {
      assertError(await call("/api/v1/datasets/ds_nope"), 404, "dataset_not_found", /ds_nope/);
    });
  });

  describe("run submission", () => {
    const submit = (body: unknown, id = notebookId) =>
      call(`/api/v1/notebooks/${id}/runs`, { method: "POST", json: body });

    it("rejects bad submissions with stable codes and creates no run", async () => {
      assert.ok(notebookId, "the notebook upload test ran first");
      await assertNothingStored(async () => {
        assertError(await submit({}, "nb_missing"), 404, "notebook_not_found", /nb_missing/);
        const ds = assertError(
          await submit({ datasets: ["ds_missing"] }),
          404,
          "dataset_not_found",
          /ds_missing/,
        );
        assert.deepEqual(ds.details, { dataset_id: "ds_missing" });

        for (const parameters of ["a=1", [1, 2], 42, true]) {
          assertError(await submit({ parameters }), 400, "validation_failed", /parameters/);
        }
        for (const name of ["1x", "class", "None", "a-b", "", "x y", "é"]) {
          const error = assertError(
            await submit({ parameters: { [name]: 1 } }),
            400,
            "invalid_parameter",
            /not a valid Python identifier/,
          );
          assert.deepEqual(error.details, { name });
        }

        const notJson = await call(`/api/v1/notebooks/${notebookId}/runs`, {
          method: "POST",
          body: "{parameters: oops",
          headers: { "content-type": "application/json" },
        });
        assertError(notJson, 400, "invalid_json", /not valid JSON/);

        const gpu = assertError(
          await submit({ gpu: { type: "Z80", count: 1 } }),
          422,
          "unknown_gpu_type",
          /Unknown GPU type "Z80"/,
        );
        const known = (gpu.details as { known: string[] }).known;
        assert.ok(
          Array.isArray(known) && known.includes("H100") && known.includes("T4"),
          JSON.stringify(known),
        );

        const extra = assertError(
          await submit({ parameterz: { a: 1 } }),
          400,
          "validation_failed",
          /additional/i,
        );
        assert.ok(extra.details);
        assertError(await submit({ gpu: { type: "T4", count: 1, vram: 16 } }), 400, "validation_failed");
        assertError(await submit({ gpu: { type: "T4", count: 0 } }), 400, "validation_failed", /count/);
        assertError(await submit({ priority: "high" }), 400, "validation_failed", /priority/);
        assertError(
          await submit({ strategy: "race" }),
          400,
          "strategy_needs_gpu",
          /strategy \("race"\) applies to runs on a cloud GPU/,
        );
        assertError(
          await submit({ gpu: { type: "T4", count: 1 }, strategy: "fastest" }),
          400,
          "validation_failed",
          /strategy/,
        );
        assertError(await submit({ timeout_s: 0 }), 400, "validation_failed", /timeout_s/);
        assertError(
          await submit({ backoff_min_s: 60, backoff_max_s: 10 }),
          400,
          "invalid_backoff",
          /backoff_max_s/,
        );
        assertError(await submit([1, 2]), 400, "validation_failed");
      });
    });

    it("answers 404 for an unknown run on every run route", async () => {
      assertError(await call("/api/v1/runs/run_nope"), 404, "run_not_found", /run_nope/);
      assertError(
        await call("/api/v1/runs/run_nope/cancel", { method: "POST" }),
        404,
        "run_not_found",
        /run_nope/,
      );
      assertError(await call("/api/v1/runs/run_nope/download"), 404, "run_not_found", /run_nope/);
      assertError(await call("/api/v1/runs/run_nope/logs"), 404, "run_not_found", /run_nope/);
    });
  });

  describe("a real run, cancellation and signed URLs", () => {
    let downloads: DownloadView | undefined;

    it("runs a tiny notebook with a dataset to success; a run queued behind it can be cancelled", async () => {
      const dataset = await postMultipart("/api/v1/datasets", [
        { filename: "data/numbers.csv", content: "n\n1\n2\n3\n" },
      ]);
      assert.equal(dataset.status, 201, dataset.text);
      const datasetId = (dataset.json as { id: string }).id;
      const nb = new FormData();
      nb.append(
        "file",
        new Blob([
          notebookJson([
            "# parameters\nscale = 1",
            [
              "import os, pathlib",
              "rows = pathlib.Path(os.environ['HANGAR_INPUT_DIR'], 'data', 'numbers.csv').read_text().split()[1:]",
              "total = sum(int(r) for r in rows) * scale",
              "pathlib.Path(os.environ['HANGAR_OUTPUT_DIR'], 'total.txt').write_text(str(total))",
              "print('total', total)",
            ].join("\n"),
          ]),
        ]),
        "sum.ipynb",
      );
      const uploaded = await call("/api/v1/notebooks", { method: "POST", body: nb });
      assert.equal(uploaded.status, 201, uploaded.text);
      const nbId = (uploaded.json as { id: string }).id;

      const submitted = await call(`/api/v1/notebooks/${nbId}/runs`, {
        method: "POST",
        json: { datasets: [datasetId], parameters: { scale: 10 } },
      });
      assert.equal(submitted.status, 201, submitted.text);
      const run = submitted.json as RunView & { parameters: unknown; datasets: string[] };
      assert.match(run.id, /^run_/);
      assert.equal(run.status, "queued");
      assert.deepEqual(run.parameters, { scale: 10 });
      assert.deepEqual(run.datasets, [datasetId]);

      // While the only instance is busy with it, a second run waits in the queue.
      await waitFor("the first run to start", async () => {
        const answer = await call(`/api/v1/runs/${run.id}`);
        const status = (answer.json as RunView).status;
        return status !== "queued";
      });
      const queued = await call(`/api/v1/notebooks/${nbId}/runs`, { method: "POST", json: null });
      assert.equal(queued.status, 201, queued.text);
      const queuedId = (queued.json as RunView).id;
      const cancelled = await call(`/api/v1/runs/${queuedId}/cancel`, { method: "POST" });
      assert.equal(cancelled.status, 200, cancelled.text);
      assert.equal((cancelled.json as RunView).status, "cancelled");
      const fetched = await call(`/api/v1/runs/${queuedId}`);
      assert.equal((fetched.json as RunView).status, "cancelled");
      const again = assertError(
        await call(`/api/v1/runs/${queuedId}/cancel`, { method: "POST" }),
        409,
        "run_finished",
        /already cancelled/,
      );
      assert.deepEqual(again.details, { status: "cancelled" });

      const final = await waitFor(
        "the first run to finish",
        async () => {
          const view = (await call(`/api/v1/runs/${run.id}`)).json as RunView;
          return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
        },
        30_000,
      );
      assert.equal(final.status, "succeeded", `${JSON.stringify(final)}\n${server.output()}`);
      // A finished run cannot be cancelled either.
      assertError(
        await call(`/api/v1/runs/${run.id}/cancel`, { method: "POST" }),
        409,
        "run_finished",
        /succeeded/,
      );

      const links = await call(`/api/v1/runs/${run.id}/download`);
      assert.equal(links.status, 200, links.text);
      downloads = links.json as DownloadView;
      assert.equal(downloads.status, "succeeded");
      assert.ok(downloads.executed_notebook);
      assert.deepEqual(
        downloads.outputs.map((o) => [o.path, o.size]),
        [["total.txt", 2]],
      );
    });

    it("serves a signed URL and refuses every altered one with 403", async () => {
      assert.ok(downloads, "the run test ran first");
      const output = downloads.outputs[0]!;
      const url = new URL(output.url);
      assert.equal(url.origin, server.url);
      assert.match(url.pathname, /^\/blobs\/runs\/run_[^/]+\/output\/total\.txt$/);
      const ok = await fetch(url);
      assert.equal(ok.status, 200);
      assert.ok(ok.headers.get("x-request-id"));
      assert.equal(await ok.text(), "60");
      // No API key is needed: the signature is the credential.

      const check = async (target: string | URL, code: string, init?: RequestInit) => {
        const response = await fetch(target, init);
        const text = await response.text();
        const answer: Answer = {
          status: response.status,
          headers: response.headers,
          text,
          json: JSON.parse(text),
        };
        return assertError(answer, 403, code);
      };

      const sig = url.searchParams.get("sig")!;
      const flipped = new URL(url);
      flipped.searchParams.set("sig", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
      await check(flipped, "signature_invalid");
      const lastFlipped = new URL(url);
      lastFlipped.searchParams.set("sig", sig.slice(0, -1) + (sig.endsWith("A") ? "B" : "A"));
      await check(lastFlipped, "signature_invalid");
      const noSig = new URL(url);
      noSig.searchParams.delete("sig");
      await check(noSig, "signature_invalid");

      const otherKey = new URL(downloads.executed_notebook!.url);
      otherKey.search = url.search;
      await check(otherKey, "signature_invalid");
      const sibling = new URL(url);
      sibling.pathname = url.pathname.replace("total.txt", "total.txt2");
      await check(sibling, "signature_invalid");

      const later = new URL(url);
      later.searchParams.set("expires", String(Number(url.searchParams.get("expires")) + 1));
      await check(later, "signature_invalid");
      const badExpiry = new URL(url);
      badExpiry.searchParams.set("expires", "soon");
      await check(badExpiry, "signature_invalid");

      const target = join(blobsRoot, url.pathname.slice("/blobs/".length));
      await check(url, "signature_invalid", { method: "PUT", body: "overwritten" });
      assert.equal(await readFile(target, "utf8"), "60", "the refused PUT changed nothing");
      const head = await fetch(url, { method: "DELETE" });
      assert.ok(head.status === 404 || head.status === 405, `DELETE → ${head.status}`);
      assert.equal(await readFile(target, "utf8"), "60");

      // Still downloadable after all that.
      assert.equal(await (await fetch(url)).text(), "60");
    });

    it("fails a run whose output is over the upload limit with upload_failed, not retried", async () => {
      const nb = new FormData();
      const source = `import os, pathlib\npathlib.Path(os.environ['HANGAR_OUTPUT_DIR'], 'big.bin').write_bytes(b'x' * ${MAX_UPLOAD + 1})`;
      nb.append("file", new Blob([notebookJson([source])]), "big-output.ipynb");
      const uploaded = await call("/api/v1/notebooks", { method: "POST", body: nb });
      const nbId = (uploaded.json as { id: string }).id;
      const submitted = await call(`/api/v1/notebooks/${nbId}/runs`, { method: "POST", json: {} });
      const runId = (submitted.json as RunView).id;
      const final = await waitFor("the run to end", async () => {
        const run = (await call(`/api/v1/runs/${runId}`)).json as RunView;
        return ["succeeded", "failed", "cancelled"].includes(run.status) ? run : null;
      });
      assert.equal(final.status, "failed", JSON.stringify(final));
      assert.equal(final.error?.code, "upload_failed");
      assert.match(final.error?.message ?? "", /big\.bin.*413/);
      assert.equal(final.attempts, 1, "a file over the limit will not fit on another attempt either");
    });

    it("stores an empty file through a signed PUT (an empty output is still an output)", async () => {
      const secret = (await readFile(join(server.dataDir, "signing-secret"), "utf8")).trim();
      const key = `runs/empty-put-${randomBytes(4).toString("hex")}/output/empty.txt`;
      const query = new UrlSigner(secret).query("PUT", key, Math.floor(Date.now() / 1000) + 60);
      const put = await rawRequest(server.url, "PUT", `/blobs/${key}?${query}`);
      assert.equal(put.status, 201, put.body.toString());
      assert.deepEqual(JSON.parse(put.body.toString()), { key, size: 0 });
      assert.equal((await readFile(join(blobsRoot, key))).length, 0);
    });

    it("never serves a file outside the store, even with a genuine signature for a `..` key", async () => {
      assert.ok(downloads);
      const url = new URL(downloads.outputs[0]!.url);
      const query = url.search;
      const secret = (await readFile(join(server.dataDir, "signing-secret"), "utf8")).trim();
      const signer = new UrlSigner(secret);
      const expires = Math.floor(Date.now() / 1000) + 600;
      const secretBytes = await readFile(join(server.dataDir, "signing-secret"));

      const attempts: { path: string; key?: string }[] = [
        { path: `/blobs/../signing-secret${query}` },
        { path: `/blobs/%2e%2e/signing-secret${query}` },
        { path: `/blobs/%2E%2E/%2e%2e/etc/passwd${query}` },
        { path: `/blobs/runs/..%2f..%2fsigning-secret${query}` },
        { path: `/blobs/runs/x/../../../signing-secret${query}` },
        // Genuinely signed keys that climb out of the store: the key check still refuses them.
        { path: "/blobs/%2e%2e/signing-secret", key: "../signing-secret" },
        { path: "/blobs/runs/..%2f..%2fsigning-secret", key: "runs/../../signing-secret" },
        { path: "/blobs/%2Fetc%2Fpasswd", key: "/etc/passwd" },
        { path: "/blobs/..%5csigning-secret", key: "..\\signing-secret" },
      ];
      for (const { path, key } of attempts) {
        const full = key ? `${path}?${signer.query("GET", key, expires)}` : path;
        const response = await rawRequest(server.url, "GET", full);
        assert.ok(response.status >= 400 && response.status < 500, `${full} → ${response.status}`);
        assert.ok(response.headers["x-request-id"], "errors carry a request id too");
        assert.equal(response.body.includes(secretBytes), false, `${full} leaked the signing secret`);
        assert.equal(response.body.includes(Buffer.from("root:")), false, `${full} leaked /etc/passwd`);
        const body = JSON.parse(response.body.toString()) as ErrorBody;
        assert.match(
          body.error.code,
          /^(unsafe_blob_key|signature_invalid|blob_key_outside_root|invalid_blob_path)$/,
          full,
        );
        if (key) assert.equal(body.error.code, "unsafe_blob_key", full);

        // Nor may a signed PUT write outside the store.
        if (key) {
          const put = await rawRequest(
            server.url,
            "PUT",
            `${path}?${signer.query("PUT", key, expires)}`,
            Buffer.from("pwned"),
          );
          assert.ok(put.status >= 400 && put.status < 500, `PUT ${path} → ${put.status}`);
        }
      }
      assert.deepEqual(await readFile(join(server.dataDir, "signing-secret")), secretBytes);
      assert.equal(
        (await listFiles(dirname(server.dataDir))).some((f) => f.endsWith("pwned")),
        false,
      );
      // A path that is not valid percent-encoding is refused before routing, in the same error shape.
      for (const path of [`/blobs/%E0%A4%A/x${query}`, "/blobs/%zz", "/api/v1/runs/%zz"]) {
        const bad = await rawRequest(server.url, "GET", path);
        assert.equal(bad.status, 400, path);
        assert.ok(bad.headers["x-request-id"], `${path} has an x-request-id`);
        const error = (JSON.parse(bad.body.toString()) as ErrorBody).error;
        assert.equal(error.code, "invalid_url", path);
        assert.match(error.message, /percent-encoding/);
        assert.equal(error.details, null);
      }
    });
  });

  describe("operations endpoints", () => {
    it("publishes an OpenAPI 3 document with the documented paths", async () => {
      const answer = await call("/openapi.json", { key: null });
      assert.equal(answer.status, 200);
      const doc = answer.json as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.match(doc.openapi, /^3\./);
      for (const [path, method] of [
        ["/api/v1/notebooks", "post"],
        ["/api/v1/notebooks", "get"],
        ["/api/v1/notebooks/{id}", "get"],
        ["/api/v1/notebooks/{id}/runs", "post"],
        ["/api/v1/notebooks/{id}/runs", "get"],
        ["/api/v1/datasets", "post"],
        ["/api/v1/datasets/{id}", "get"],
        ["/api/v1/runs", "get"],
        ["/api/v1/runs/{id}", "get"],
        ["/api/v1/runs/{id}/cancel", "post"],
        ["/api/v1/runs/{id}/download", "get"],
        ["/api/v1/runs/{id}/logs", "get"],
        ["/healthz", "get"],
        ["/metrics", "get"],
      ] as const) {
        assert.ok(doc.paths[path]?.[method], `${method.toUpperCase()} ${path} is documented`);
      }
      assert.equal(
        Object.keys(doc.paths).some((p) => p.startsWith("/blobs")),
        false,
        "the signed blob routes stay out of the public document",
      );
    });

    it("serves the docs UI as HTML", async () => {
      const response = await fetch(`${server.url}/docs`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type") ?? "", /text\/html/);
      assert.match(await response.text(), /<html/i);
    });

    it("exposes Prometheus metrics", async () => {
      const answer = await call("/metrics", { key: null });
      assert.equal(answer.status, 200);
      assert.match(answer.headers.get("content-type") ?? "", /text\/plain/);
      for (const name of [
        "hangar_http_requests_total",
        "hangar_jobs",
        "hangar_instances",
        "hangar_queue_wait_seconds",
        "hangar_run_duration_seconds",
      ]) {
        assert.match(answer.text, new RegExp(`^# TYPE ${name} `, "m"), name);
      }
      assert.match(answer.text, /^hangar_http_requests_total\{[^}]*status="401"[^}]*\} \d+/m);
      assert.match(answer.text, /^hangar_jobs\{state="cancelled"\} 1$/m);
      assert.match(answer.text, /^hangar_run_duration_seconds_count\{status="succeeded"\} 1$/m);
    });

    it("puts an x-request-id on every response and echoes the caller's", async () => {
      const seen = new Set<string>();
      for (const [path, key] of [
        ["/healthz", null],
        ["/metrics", null],
        ["/openapi.json", null],
        ["/api/v1/notebooks", null],
        ["/api/v1/notebooks", TEST_API_KEY],
        ["/api/v1/runs/run_nope", TEST_API_KEY],
        ["/no/such/route", TEST_API_KEY],
      ] as const) {
        const answer = await call(path, { key });
        const id = answer.headers.get("x-request-id");
        assert.ok(id, `${path} has an x-request-id`);
        seen.add(id);
      }
      assert.equal(seen.size, 7, "request ids are unique");
      const mine = `test-${randomBytes(6).toString("hex")}`;
      for (const path of ["/healthz", "/api/v1/runs/run_nope"]) {
        const answer = await call(path, { headers: { "x-request-id": mine } });
        assert.equal(answer.headers.get("x-request-id"), mine);
      }
      const missing = await call("/no/such/route");
      assertError(missing, 404, "route_not_found", /GET \/no\/such\/route/);
    });
  });
});
