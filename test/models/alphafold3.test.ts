import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it, type TestContext } from "node:test";
import type { JsonObject } from "../../src/domain/json.ts";
import { AlphaFold3Runner, af3SanitisedName } from "../../src/models/alphafold3/runner.ts";
import { alphafold3Spec } from "../../src/models/alphafold3/spec.ts";
import type { CommandSpec, PredictionContext, PredictionInput, ProcessExit } from "../../src/models/model.ts";

// A 76-residue ubiquitin: short enough to read, a real protein all the same.
const UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG";
const ASPIRIN: PredictionInput = { id: "lig_aspirin", name: "aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" };
// Upper case in the id: AlphaFold3 lowercases it for the output folder and files.
const IMATINIB: PredictionInput = {
  id: "Lig_Imatinib",
  name: "imatinib",
  smiles: "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
};
const DEFAULT_PARAMETERS: JsonObject = { num_diffusion_samples: 5, num_recycles: 10, seed: 1 };
const SUCCESS: ProcessExit = { code: 0, signal: null, stderrTail: "" };

async function sandbox(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "hangar-af3-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An executable that would run, standing in for the real `run_alphafold.py`. */
async function fakeExecutable(dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, name);
  await writeFile(file, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  return file;
}

/** A work directory and a weights directory side by side in the sandbox. */
async function setUp(t: TestContext): Promise<{ dir: string; workDir: string; modelDir: string }> {
  const dir = await sandbox(t);
  const modelDir = path.join(dir, "weights");
  await mkdir(modelDir);
  await writeFile(path.join(modelDir, "af3.bin"), "weights");
  return { dir, workDir: path.join(dir, "work"), modelDir };
}

function context(
  workDir: string,
  modelDir: string,
  overrides: Partial<PredictionContext> = {},
): PredictionContext {
  return {
    workDir,
    proteinSequence: UBIQUITIN,
    parameters: DEFAULT_PARAMETERS,
    env: { PATH: path.join(workDir, "no-such-bin"), HANGAR_AF3_MODEL_DIR: modelDir },
    ...overrides,
  };
}

const flagValue = (command: CommandSpec, flag: string): string => {
  const index = command.argv.indexOf(flag);
  assert.ok(index > 0, `argv has ${flag}`);
  return command.argv[index + 1]!;
};

const summaryConfidences = {
  chain_ids: ["A", "B"],
  chain_iptm: [0.87, 0.87],
  chain_pair_iptm: [
    [0.91, 0.87],
    [0.87, 0.83],
  ],
  chain_pair_pae_min: [
    [0.76, 1.42],
    [1.58, 0.79],
  ],
  chain_ptm: [0.91, 0.83],
  fraction_disordered: 0.02,
  has_clash: 0.0,
  iptm: 0.87,
  num_recycles: 10.0,
  ptm: 0.9,
  ranking_score: 0.886,
};
const complexCif = (name: string) =>
  [
    `data_${name}`,
    "#",
    `_entry.id ${name}`,
    "#",
    "loop_",
    "_atom_site.group_PDB",
    "_atom_site.type_symbol",
    "_atom_site.label_atom_id",
    "_atom_site.label_alt_id",
    "_atom_site.label_comp_id",
    "_atom_site.label_asym_id",
    "_atom_site.label_entity_id",
    "_atom_site.label_seq_id",
    "_atom_site.pdbx_PDB_ins_code",
    "_atom_site.Cartn_x",
    "_atom_site.Cartn_y",
    "_atom_site.Cartn_z",
    "_atom_site.occupancy",
    "_atom_site.B_iso_or_equiv",
    "_atom_site.auth_seq_id",
    "_atom_site.auth_asym_id",
    "_atom_site.pdbx_PDB_model_num",
    "_atom_site.id",
    "ATOM   N N   . MET A 1 1 ? 12.631 -3.415 7.902  1.00 81.22 1 A 1 1",
    "ATOM   C CA  . MET A 1 1 ? 13.874 -2.672 7.611  1.00 83.47 1 A 1 2",
    "ATOM   C C   . MET A 1 1 ? 14.102 -1.390 8.412  1.00 84.05 1 A 1 3",
    "HETATM C C1  . LIG-B B 2 . ? 4.218  1.905  -2.336 1.00 78.10 . B 1 4",
    "HETATM O O1  . LIG-B B 2 . ? 5.004  2.771  -1.902 1.00 76.93 . B 1 5",
    "#",
    "",
  ].join("\n");

/** Writes what run_alphafold.py writes for one fold job; `skip` leaves files out, `replace` corrupts them. */
async function writeAf3Outputs(
  command: CommandSpec,
  name: string,
  options: { skip?: string[]; replace?: Record<string, string> } = {},
): Promise<string> {
  const dir = path.join(flagValue(command, "--output_dir"), name);
  await mkdir(path.join(dir, "seed-1_sample-0"), { recursive: true });
  const files: Record<string, string> = {
    [`${name}_data.json`]: "{}",
    [`${name}_model.cif`]: complexCif(name),
    [`${name}_summary_confidences.json`]: JSON.stringify(summaryConfidences, null, 1),
    [`${name}_confidences.json`]: JSON.stringify({ atom_chain_ids: ["A", "A", "A", "B", "B"] }),
    [`${name}_ranking_scores.csv`]: "seed,sample,ranking_score\n1,0,0.886\n1,1,0.871\n",
    "TERMS_OF_USE.md": "AlphaFold 3 output terms of use\n",
    ...options.replace,
  };
  for (const [file, text] of Object.entries(files)) {
    if (!options.skip?.includes(file)) await writeFile(path.join(dir, file), text);
  }
  return dir;
}

describe("af3SanitisedName", () => {
  it("lowercases, turns spaces into underscores and drops other characters, as AlphaFold3 does", () => {
    assert.equal(af3SanitisedName("Lig_Imatinib-2"), "lig_imatinib-2");
    assert.equal(af3SanitisedName("My Ligand #1 (v2).x"), "my_ligand_1_v2.x");
    assert.equal(af3SanitisedName("ÄBC/../d"), "bc..d");
  });
});

describe("AlphaFold3 spec", () => {
  it("declares the ranking score and an 80 GiB GPU", () => {
    assert.equal(alphafold3Spec.target, "protein_sequence");
    assert.deepEqual(alphafold3Spec.resources, { accelerator: "gpu", minGpuMemoryGiB: 80 });
    assert.deepEqual(
      {
        name: alphafold3Spec.score.name,
        unit: alphafold3Spec.score.unit,
        better: alphafold3Spec.score.better,
      },
      { name: "ranking_score", unit: "", better: "higher" },
    );
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(alphafold3Spec.parameters).map(([name, spec]) => [name, spec.default]),
      ),
      { num_diffusion_samples: 5, num_recycles: 10, seed: 1 },
    );
  });
});

describe("AlphaFold3Runner.checkInstalled", () => {
  const runner = new AlphaFold3Runner();

  it("names the command and HANGAR_AF3_CMD when run_alphafold.py is not on PATH", async (t) => {
    const { dir, modelDir } = await setUp(t);
    const message = await runner.checkInstalled({ PATH: dir, HANGAR_AF3_MODEL_DIR: modelDir });
    assert.ok(message);
    assert.match(message, /"run_alphafold\.py"/);
    assert.match(message, /HANGAR_AF3_CMD/);
  });

  it("finds run_alphafold.py on the PATH it is given, or at HANGAR_AF3_CMD", async (t) => {
    const { dir, modelDir } = await setUp(t);
    const script = await fakeExecutable(path.join(dir, "bin"), "run_alphafold.py");
    assert.equal(
      await runner.checkInstalled({ PATH: path.join(dir, "bin"), HANGAR_AF3_MODEL_DIR: modelDir }),
      null,
    );
    assert.equal(
      await runner.checkInstalled({ HANGAR_AF3_CMD: script, HANGAR_AF3_MODEL_DIR: modelDir }),
      null,
    );
    const missing = await runner.checkInstalled({
      HANGAR_AF3_CMD: path.join(dir, "app", "run_alphafold.py"),
      HANGAR_AF3_MODEL_DIR: modelDir,
    });
    assert.ok(
      missing?.includes(path.join(dir, "app", "run_alphafold.py")) && missing.includes("HANGAR_AF3_CMD"),
    );
  });

  it("requires HANGAR_AF3_MODEL_DIR to name a directory", async (t) => {
    const { dir } = await setUp(t);
    await fakeExecutable(path.join(dir, "bin"), "run_alphafold.py");
    const PATH = path.join(dir, "bin");
    const unset = await runner.checkInstalled({ PATH });
    assert.ok(unset);
    assert.match(unset, /HANGAR_AF3_MODEL_DIR is not set/);
    const missing = path.join(dir, "no-weights");
    const notADirectory = await runner.checkInstalled({ PATH, HANGAR_AF3_MODEL_DIR: missing });
    assert.ok(notADirectory?.includes("HANGAR_AF3_MODEL_DIR") && notADirectory.includes(missing));
  });
});

describe("AlphaFold3Runner.prepare", () => {
  const runner = new AlphaFold3Runner();

  it("writes one documented input JSON per ligand and the run_alphafold.py command", async (t) => {
    const { dir, workDir, modelDir } = await setUp(t);
    const script = await fakeExecutable(path.join(dir, "bin"), "run_alphafold.py");
    const ctx = context(workDir, modelDir, {
      parameters: { num_diffusion_samples: 3, num_recycles: 6, seed: 7 },
      env: { PATH: path.join(dir, "bin"), HANGAR_AF3_MODEL_DIR: modelDir },
    });
    await runner.prepareShared(ctx);
    const { command, failed } = await runner.prepare([ASPIRIN, IMATINIB], ctx);

    assert.deepEqual(failed, []);
    assert.ok(command);
    const inputDir = path.join(workDir, "af3_in_1");
    assert.deepEqual(command.argv, [
      script,
      "--input_dir",
      inputDir,
      "--output_dir",
      path.join(workDir, "af3_out_1"),
      "--model_dir",
      modelDir,
      "--run_data_pipeline=false",
      "--num_diffusion_samples",
      "3",
      "--num_recycles",
      "6",
    ]);
    assert.deepEqual(command.inputIds, ["lig_aspirin", "Lig_Imatinib"]);
    assert.equal(command.cwd, workDir);
    assert.deepEqual((await readdir(inputDir)).sort(), ["Lig_Imatinib.json", "lig_aspirin.json"]);

    const written = JSON.parse(await readFile(path.join(inputDir, "Lig_Imatinib.json"), "utf8"));
    assert.deepEqual(written, {
      name: "Lig_Imatinib",
      modelSeeds: [7],
      dialect: "alphafold3",
      version: 4,
      sequences: [
        { protein: { id: "A", sequence: UBIQUITIN, unpairedMsa: "", pairedMsa: "", templates: [] } },
        { ligand: { id: "B", smiles: IMATINIB.smiles } },
      ],
    });
  });

  it("uses seed 1 and the defaults when parameters leave them out", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const { command } = await runner.prepare([ASPIRIN], context(workDir, modelDir, { parameters: {} }));
    assert.ok(command);
    assert.equal(command.argv[0], "run_alphafold.py", "falls back to the bare name when it is not on PATH");
    assert.deepEqual(command.argv.slice(-4), ["--num_diffusion_samples", "5", "--num_recycles", "10"]);
    const written = JSON.parse(await readFile(path.join(command.argv[2]!, "lig_aspirin.json"), "utf8"));
    assert.deepEqual(written.modelSeeds, [1]);
  });

  it("points the protein's unpairedMsaPath at a precomputed MSA, keeping the other MSA fields empty", async (t) => {
    const { dir, workDir, modelDir } = await setUp(t);
    const msaPath = path.join(dir, "ubiquitin.a3m");
    await writeFile(msaPath, `>query\n${UBIQUITIN}\n>hit\n${UBIQUITIN.replace("MQIF", "MQLF")}\n`);
    const { command } = await runner.prepare([ASPIRIN, IMATINIB], context(workDir, modelDir, { msaPath }));
    assert.ok(command);
    for (const id of ["lig_aspirin", "Lig_Imatinib"]) {
      const written = JSON.parse(await readFile(path.join(command.argv[2]!, `${id}.json`), "utf8"));
      assert.deepEqual(written.sequences[0].protein, {
        id: "A",
        sequence: UBIQUITIN,
        unpairedMsaPath: msaPath,
        pairedMsa: "",
        templates: [],
      });
    }
  });

  it("fails an id that would share another's output folder", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const twin: PredictionInput = { ...IMATINIB, id: "lig_imatinib" };
    const { command, failed } = await runner.prepare([IMATINIB, twin], context(workDir, modelDir));
    assert.deepEqual(command?.inputIds, ["Lig_Imatinib"]);
    assert.deepEqual(
      failed.map((result) => [result.inputId, result.error?.code]),
      [["lig_imatinib", "name_collision"]],
    );
  });

  it("fails every input and starts nothing without a protein sequence or weights", async (t) => {
    const { dir, workDir, modelDir } = await setUp(t);
    const noSequence = await runner.prepare([ASPIRIN], context(workDir, modelDir, { proteinSequence: "" }));
    assert.equal(noSequence.command, null);
    assert.equal(noSequence.failed[0]?.error?.code, "missing_protein_sequence");
    const noWeights = await runner.prepare(
      [ASPIRIN, IMATINIB],
      context(workDir, modelDir, { env: { HANGAR_AF3_MODEL_DIR: path.join(dir, "gone") } }),
    );
    assert.equal(noWeights.command, null);
    assert.deepEqual(
      noWeights.failed.map((result) => [result.inputId, result.error?.code]),
      [
        ["lig_aspirin", "not_installed"],
        ["Lig_Imatinib", "not_installed"],
      ],
    );
    assert.match(noWeights.failed[0]!.error!.message, /HANGAR_AF3_MODEL_DIR/);
  });
});

describe("AlphaFold3Runner.parse", () => {
  const runner = new AlphaFold3Runner();

  it("reads the top-ranked model and its summary confidences from the sanitised folder", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const ctx = context(workDir, modelDir);
    const { command } = await runner.prepare([IMATINIB], ctx);
    assert.ok(command);
    const dir = await writeAf3Outputs(command, "lig_imatinib");

    const [result] = await runner.parse([IMATINIB], ctx, SUCCESS);
    assert.ok(result);
    assert.equal(result.status, "succeeded", JSON.stringify(result.error));
    assert.equal(result.inputId, "Lig_Imatinib");
    assert.equal(result.score, 0.886);
    assert.deepEqual(result.confidence, { iptm: 0.87, ptm: 0.9, fraction_disordered: 0.02, has_clash: 0 });
    assert.deepEqual(result.details, {
      chain_ids: ["A", "B"],
      chain_iptm: [0.87, 0.87],
      chain_pair_iptm: summaryConfidences.chain_pair_iptm,
      chain_pair_pae_min: summaryConfidences.chain_pair_pae_min,
      chain_ptm: [0.91, 0.83],
      num_recycles: 10,
    });
    assert.deepEqual(result.structures, [
      { path: path.join(dir, "lig_imatinib_model.cif"), format: "cif", role: "complex" },
    ]);
  });

  it("reports a clash as has_clash 1", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const ctx = context(workDir, modelDir);
    const { command } = await runner.prepare([ASPIRIN], ctx);
    const clashing = { ...summaryConfidences, has_clash: 1.0, ranking_score: -99.114 };
    await writeAf3Outputs(command!, "lig_aspirin", {
      replace: { "lig_aspirin_summary_confidences.json": JSON.stringify(clashing) },
    });
    const [result] = await runner.parse([ASPIRIN], ctx, SUCCESS);
    assert.equal(result?.score, -99.114);
    assert.equal(result?.confidence.has_clash, 1);
  });

  it("fails one ligand for a missing model and another for malformed JSON, and keeps the good one", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const ctx = context(workDir, modelDir);
    const noModel: PredictionInput = { id: "lig_nomodel", name: "no model", smiles: "c1ccccc1O" };
    const malformed: PredictionInput = { id: "lig_malformed", name: "malformed", smiles: "CCN(CC)CC" };
    const { command } = await runner.prepare([ASPIRIN, noModel, malformed], ctx);
    assert.ok(command);
    await writeAf3Outputs(command, "lig_aspirin");
    await writeAf3Outputs(command, "lig_nomodel", { skip: ["lig_nomodel_model.cif"] });
    await writeAf3Outputs(command, "lig_malformed", {
      replace: { "lig_malformed_summary_confidences.json": '{\n "chain_iptm": [0.87, ' },
    });

    const results = await runner.parse([ASPIRIN, noModel, malformed], ctx, SUCCESS);
    assert.deepEqual(
      results.map((result) => [result.inputId, result.status, result.error?.code]),
      [
        ["lig_aspirin", "succeeded", undefined],
        ["lig_nomodel", "failed", "output_missing"],
        ["lig_malformed", "failed", "output_malformed"],
      ],
    );
    assert.match(results[1]!.error!.message, /lig_nomodel_model\.cif/);
    assert.doesNotMatch(results[1]!.error!.message, /summary_confidences/);
    assert.match(results[2]!.error!.message, /lig_malformed_summary_confidences\.json/);
  });

  it("puts the exit code and stderr tail in the error of a ligand the crashed process never reached", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const ctx = context(workDir, modelDir);
    const { command } = await runner.prepare([ASPIRIN, IMATINIB], ctx);
    await writeAf3Outputs(command!, "lig_aspirin");
    const stderrTail =
      "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 61.2GiB.";
    const [done, unreached] = await runner.parse([ASPIRIN, IMATINIB], ctx, {
      code: 1,
      signal: null,
      stderrTail,
    });
    assert.equal(done?.status, "succeeded");
    assert.equal(unreached?.error?.code, "process_failed");
    assert.ok(unreached!.error!.message.includes(`run_alphafold.py exited with code 1: ${stderrTail}`));
    assert.match(unreached!.error!.message, /lig_imatinib_summary_confidences\.json/);
  });

  it("fails an input that was never prepared", async (t) => {
    const { workDir, modelDir } = await setUp(t);
    const [result] = await runner.parse([ASPIRIN], context(workDir, modelDir), SUCCESS);
    assert.equal(result?.error?.code, "not_prepared");
  });
});
