import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { builtInRunners } from "../../src/agent/predict/runners.ts";
import type { PredictionContext } from "../../src/models/model.ts";
import { resolveParameters } from "../../src/models/parameters.ts";
import { MODEL_SPECS } from "../../src/models/registry.ts";

/** The same contract, checked unchanged against every built-in model. */
const RECEPTOR = "/usr/share/pymol/data/tut/1hpv.pdb";
const SEQUENCE =
  "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";
const INPUTS = [
  { id: "lig_0", name: "aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" },
  { id: "lig_1", name: "paracetamol", smiles: "CC(=O)Nc1ccc(O)cc1" },
];

for (const runner of builtInRunners().values()) {
  const { spec } = runner;
  describe(`model conformance: ${spec.name}`, () => {
    let dir: string;
    let context: PredictionContext;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), `hangar-model-${spec.name}-`));
      const parameters = resolveParameters(spec, {});
      if ("center_x" in spec.parameters) {
        Object.assign(parameters, {
          center_x: 10,
          center_y: 16,
          center_z: 9,
          size_x: 20,
          size_y: 20,
          size_z: 20,
        });
      }
      context = {
        workDir: dir,
        parameters,
        env: { PATH: process.env.PATH, HANGAR_AF3_MODEL_DIR: dir },
        ...(spec.target === "receptor" ? { receptorPath: RECEPTOR } : { proteinSequence: SEQUENCE }),
      };
    });
    after(() => rm(dir, { recursive: true, force: true }));

    it("is registered under its name and declares a usable spec", () => {
      assert.equal(MODEL_SPECS.get(spec.name), spec);
      assert.ok(spec.version.length > 0);
      assert.ok(["lower", "higher"].includes(spec.score.better));
      assert.ok(spec.score.name.length > 0);
      assert.ok(spec.packing.perProcess >= 1);
      assert.ok(spec.packing.parallel === "cores" || spec.packing.parallel >= 1);
      // Every default satisfies its own declaration.
      const defaults = resolveParameters(spec, {});
      assert.deepEqual(resolveParameters(spec, defaults), defaults);
    });

    it("names what is missing, and the setting that provides it, when its executable is not there", async () => {
      const missing = await runner.checkInstalled({ PATH: "" });
      assert.ok(missing, "an empty PATH cannot hold the model");
      assert.match(missing, /HANGAR_[A-Z0-9_]+/);
    });

    it("turns inputs into one command over them, or into failures, never an exception", async (t) => {
      if (spec.target === "receptor" && !(existsSync(RECEPTOR) && existsSync("/usr/bin/obabel"))) {
        t.skip("receptor models need openbabel and pymol-data here");
        return;
      }
      await runner.prepareShared(context);
      const inputs = INPUTS.slice(0, spec.packing.perProcess);
      const prepared = await runner.prepare(inputs, context);
      const covered = [
        ...(prepared.command?.inputIds ?? []),
        ...prepared.failed.map((f) => f.inputId),
      ].sort();
      assert.deepEqual(covered, inputs.map((i) => i.id).sort());
      assert.ok(prepared.command, JSON.stringify(prepared.failed));
      assert.ok(prepared.command.argv.length > 1);
    });

    it("reports every input as failed, with the exit and stderr, when its process crashed without output", async () => {
      const inputs = INPUTS.slice(0, spec.packing.perProcess);
      const results = await runner.parse(inputs, context, {
        code: 1,
        signal: null,
        stderrTail: "CUDA out of memory",
      });
      assert.deepEqual(results.map((r) => r.inputId).sort(), inputs.map((i) => i.id).sort());
      for (const result of results) {
        assert.equal(result.status, "failed");
        assert.match(result.error?.message ?? "", /CUDA out of memory|exit|code 1/);
      }
    });
  });
}
