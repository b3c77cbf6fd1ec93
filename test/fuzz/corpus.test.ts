import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";

/**
 * The hostile-input corpus (test/fuzz/corpus/, plus a few inputs too big to keep as files): every
 * bad input gets a 4xx with the error shape and leaves nothing behind; the awkward but valid ones
 * (a BOM, CRLF line ends, quoted commas, salts, isotopes, metals, 10,000 cells) are accepted.
 */
const CORPUS = join(import.meta.dirname, "corpus");
const corpus = (name: string) => readFile(join(CORPUS, name));
const SEQUENCE =
  "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: answers are inspected field by field
  json: any;
  text: string;
}

describe("the hostile-input corpus", { timeout: 300_000 }, () => {
  let server: ServerProcess;

  /**
   * POSTs a body the server refuses before reading it all. The answer can come, and the connection
   * close, while the body is still being written (fetch reports a failed write, EPIPE); the client
   * may then never read the answer, which shows as status 0: the request was refused either way.
   */
  const answerBeforeBodyEnds = (path: string, body: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const request = httpRequest(`${server.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
      });
      let answered = false;
      request.on("close", () => {
        if (!answered)
          resolve({ status: 0, text: "the server closed the connection while the body was sent" });
      });
      request.on("response", (response) => {
        answered = true;
        let text = "";
        response.setEncoding("utf8").on("data", (chunk: string) => {
          text += chunk;
        });
        // "close" as well: a connection cut mid-answer never ends the response.
        for (const event of ["end", "close"])
          response.on(event, () => resolve({ status: response.statusCode ?? 0, text }));
      });
      request.on("error", (error: NodeJS.ErrnoException) => {
        if (error.code !== "EPIPE" && error.code !== "ECONNRESET") reject(error);
      });
      request.end(body);
    });

  const call = async (
    path: string,
    init: { method?: string; body?: RequestInit["body"]; type?: string } = {},
  ): Promise<Answer> => {
    const headers: Record<string, string> = { authorization: `Bearer ${TEST_API_KEY}` };
    if (init.type) headers["content-type"] = init.type;
    const response = await fetch(`${server.url}${path}`, {
      method: init.method ?? "POST",
      headers,
      body: init.body,
    });
    const text = await response.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: response.status, json, text };
  };
  const refused = (answer: Answer, what: string) => {
    assert.ok(
      answer.status >= 400 && answer.status < 500,
      `${what}: ${answer.status} ${answer.text.slice(0, 200)}`,
    );
    assert.equal(typeof answer.json?.error?.code, "string", `${what}: ${answer.text.slice(0, 200)}`);
    return answer.json.error.code as string;
  };
  const upload = (files: { name: string; bytes: Uint8Array | string }[], path = "/api/v1/datasets") => {
    const form = new FormData();
    for (const file of files) form.append("file", new Blob([file.bytes]), file.name);
    return call(path, { body: form });
  };
  const count = async (path: string, field: string) =>
    ((await call(path, { method: "GET" })).json[field] as unknown[]).length;

  before(async () => {
    server = await spawnServer({
      HANGAR_MAX_UPLOAD_BYTES: String(8 * 1024 * 1024),
      HANGAR_LOCAL_MAX_INSTANCES: "1",
    });
  });
  after(() => stopServer(server));

  it("refuses every unsafe file name, storing none of the upload", async () => {
    const names = JSON.parse((await corpus("file-names.json")).toString()) as string[];
    for (const name of names) {
      const code = refused(
        await upload([
          { name: "fine.csv", bytes: "a,b\n" },
          { name, bytes: "x" },
        ]),
        JSON.stringify(name),
      );
      assert.ok(
        ["unsafe_file_name", "no_files", "bad_request"].includes(code),
        `${JSON.stringify(name)}: ${code}`,
      );
    }
    assert.equal(await count("/api/v1/datasets", "datasets"), 0);
  });

  it("refuses broken notebooks with a named reason, and takes a BOM and 10,000 cells", async () => {
    for (const name of [
      "notebook-nbformat3.ipynb",
      "notebook-nbformat-string.ipynb",
      "notebook-no-nbformat.ipynb",
      "notebook-cells-not-list.ipynb",
      "notebook-array.ipynb",
      "notebook-truncated.ipynb",
      "notebook-nbformat99.ipynb",
    ]) {
      const code = refused(await upload([{ name, bytes: await corpus(name) }], "/api/v1/notebooks"), name);
      assert.ok(["invalid_notebook", "unsupported_nbformat"].includes(code), `${name}: ${code}`);
    }
    assert.equal(await count("/api/v1/notebooks", "notebooks"), 0);
    const bom = await upload(
      [{ name: "bom.ipynb", bytes: await corpus("notebook-bom.ipynb") }],
      "/api/v1/notebooks",
    );
    assert.equal(bom.status, 201, bom.text);
    const withBom = await corpus("notebook-bom.ipynb");
    assert.equal(
      bom.json.size,
      withBom.length - 3,
      "kept without its byte-order mark, which Jupyter refuses",
    );
    const cells = Array.from({ length: 10_000 }, (_, i) => ({
      cell_type: "code",
      metadata: {},
      source: `x = ${i}`,
      outputs: [],
      execution_count: null,
    }));
    const many = await upload(
      [
        {
          name: "many.ipynb",
          bytes: JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells }),
        },
      ],
      "/api/v1/notebooks",
    );
    assert.equal(many.status, 201, many.text);
    assert.equal(many.json.cells, 10_000);
    const big = await upload(
      [{ name: "big.ipynb", bytes: new Uint8Array(9 * 1024 * 1024).fill(32) }],
      "/api/v1/notebooks",
    );
    assert.equal(refused(big, "a notebook over the upload limit"), "payload_too_large");
    assert.equal(await count("/api/v1/notebooks", "notebooks"), 2);
  });

  it("answers deeply nested, oversized and non-UTF-8 JSON with 4xx", async () => {
    for (const name of ["deep-array.json", "deep-object.json", "invalid-utf8.json"]) {
      refused(
        await call("/api/v1/predict/batch", { body: await corpus(name), type: "application/json" }),
        name,
      );
    }
    const huge = `{"model":"vina","ligands":[${'{"name":"x","smiles":"CCO"},'.repeat(700_000)}{}]}`;
    const tooLarge = await answerBeforeBodyEnds("/api/v1/predict/batch", huge);
    assert.ok([0, 413].includes(tooLarge.status), `${tooLarge.status} ${tooLarge.text.slice(0, 200)}`);
    if (tooLarge.status === 413)
      assert.equal(
        (JSON.parse(tooLarge.text) as { error: { code: string } }).error.code,
        "payload_too_large",
      );
    assert.equal(await count("/api/v1/batches", "batches"), 0);
  });

  it("refuses unusable SMILES and takes salts, isotopes and metals (largest fragment kept)", async () => {
    const smiles = JSON.parse((await corpus("smiles.json")).toString()) as {
      invalid: string[];
      valid: string[];
    };
    const predict = (ligand_smiles: string) =>
      call("/api/v1/predict", {
        body: JSON.stringify({
          model: "boltz2",
          protein_sequence: SEQUENCE,
          ligand_smiles,
          ligand_name: "corpus",
        }),
        type: "application/json",
      });
    for (const bad of smiles.invalid)
      refused(await predict(bad), `SMILES ${JSON.stringify(bad.slice(0, 20))}`);
    for (const good of smiles.valid) {
      const answer = await predict(good);
      assert.equal(answer.status, 201, `${good}: ${answer.text.slice(0, 200)}`);
    }
  });

  it("refuses receptors without atoms, and ligand files it cannot read, naming the problem", async () => {
    for (const name of ["receptor-no-atoms.pdb", "receptor-hetatm-only.pdb"]) {
      const dataset = await upload([{ name, bytes: await corpus(name) }]);
      assert.equal(dataset.status, 201, dataset.text);
      const answer = await call("/api/v1/predict", {
        body: JSON.stringify({
          model: "vina",
          receptor: dataset.json.id,
          ligand_smiles: "CCO",
          parameters: { center_x: 0, center_y: 0, center_z: 0, size_x: 10, size_y: 10, size_z: 10 },
        }),
        type: "application/json",
      });
      assert.equal(refused(answer, name), "invalid_receptor");
    }
    const batch = async (name: string) => {
      const dataset = await upload([{ name, bytes: await corpus(name) }]);
      assert.equal(dataset.status, 201, dataset.text);
      return call("/api/v1/predict/batch", {
        body: JSON.stringify({
          model: "boltz2",
          protein_sequence: SEQUENCE,
          ligands_dataset: dataset.json.id,
        }),
        type: "application/json",
      });
    };
    for (const name of [
      "ligands-semicolon.csv",
      "ligands-no-smiles-column.csv",
      "ligands-empty.csv",
      "ligands-header-only.csv",
    ]) {
      refused(await batch(name), name);
    }
    assert.equal(await count("/api/v1/batches", "batches"), 0);
    for (const name of ["ligands-bom-crlf.csv", "ligands-quoted.csv"]) {
      const answer = await batch(name);
      assert.equal(answer.status, 201, `${name}: ${answer.text.slice(0, 300)}`);
      assert.equal(answer.json.progress.total, 2, name);
    }
    const quoted = (await call("/api/v1/batches", { method: "GET" })).json.batches as { id: string }[];
    assert.equal(quoted.length, 2);
  });
});
