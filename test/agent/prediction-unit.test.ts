import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ControlPlaneClient } from "../../src/agent/control-plane-client.ts";
import { PredictionUnitRunner } from "../../src/agent/predict/unit.ts";
import type { PredictionAssignment } from "../../src/app/agent-hub.ts";
import { boltz2Spec } from "../../src/models/boltz2/spec.ts";
import type { ModelRunner, PredictionInput } from "../../src/models/model.ts";

/** A model whose process does nothing and whose every input succeeds with one structure file. */
const fakeRunner: ModelRunner = {
  spec: { ...boltz2Spec, packing: { perProcess: 4, parallel: 1 } },
  checkInstalled: async () => null,
  prepareShared: async () => undefined,
  async prepare(inputs, context) {
    await mkdir(context.workDir, { recursive: true });
    return {
      command: {
        argv: [process.execPath, "-e", ""],
        cwd: context.workDir,
        inputIds: inputs.map((i) => i.id),
      },
      failed: [],
    };
  },
  async parse(inputs: PredictionInput[], context) {
    return Promise.all(
      inputs.map(async (input) => {
        const path = join(context.workDir, `${input.id}.cif`);
        await writeFile(path, `data_${input.id}\n`);
        return {
          inputId: input.id,
          status: "succeeded" as const,
          score: -1,
          confidence: {},
          details: {},
          structures: [{ path, format: "cif" as const, role: "complex" as const }],
        };
      }),
    );
  },
};

describe("a prediction unit whose child lost its lease", () => {
  let server: Server;
  let url: string;
  let dir: string;
  const finished: { job_id: string; status: string }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hangar-unit-"));
    // A control plane where job_1's lease lapsed: its uploads answer 409 lease_lost.
    server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      request.on("end", () => {
        const send = (status: number, json: unknown) => {
          response.writeHead(status, { "content-type": "application/json" });
          response.end(JSON.stringify(json));
        };
        const uploads = /^\/agent\/v1\/jobs\/([^/]+)\/uploads$/.exec(request.url ?? "");
        if (uploads?.[1] === "job_1") {
          return send(409, { error: { code: "lease_lost", message: "This instance no longer holds job_1" } });
        }
        if (uploads) {
          const { paths } = JSON.parse(body) as { paths: string[] };
          return send(200, { urls: paths.map((path) => ({ path, url: `${url}/blob`, headers: {} })) });
        }
        if (request.url === "/agent/v1/finish") {
          const { items } = JSON.parse(body) as { items: { job_id: string; status: string }[] };
          finished.push(...items.map(({ job_id, status }) => ({ job_id, status })));
          return send(200, { items: items.map(({ job_id, status }) => ({ job_id, status })) });
        }
        if (request.url === "/agent/v1/heartbeats") return send(200, { cancel: [], lost: [] });
        return send(200, {});
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("no port");
    url = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it("drops that child alone and reports its unit-mates' results", async () => {
    const runner = new PredictionUnitRunner(new ControlPlaneClient(url, 5_000), {
      workRoot: dir,
      heartbeatS: 1,
      runners: new Map([["boltz2", fakeRunner]]),
      cores: 1,
    });
    const unit: PredictionAssignment = {
      kind: "predict",
      model: "boltz2",
      batch_id: "batch_1",
      timeout_s: 60,
      target: { receptor: null, protein_sequence: "MKV", msa: null },
      parameters: {},
      items: [0, 1, 2, 3].map((n) => ({
        job_id: `job_${n}`,
        lease_token: `lease_${n}`,
        attempt: 1,
        log_seq_after: 0,
        input: { id: `in${n}`, name: `l${n}`, smiles: "CCO" },
      })),
    };
    await runner.run(unit, new AbortController().signal);
    assert.deepEqual(
      finished.sort((a, b) => a.job_id.localeCompare(b.job_id)),
      [
        { job_id: "job_0", status: "succeeded" },
        { job_id: "job_2", status: "succeeded" },
        { job_id: "job_3", status: "succeeded" },
      ],
      "job_1 is not reported (its job moved on); the others are, as succeeded",
    );
  });
});
