import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it, type TestContext } from "node:test";
import type { JsonObject } from "../../src/domain/json.ts";
import { Boltz2Runner } from "../../src/models/boltz2/runner.ts";
import { boltz2Spec } from "../../src/models/boltz2/spec.ts";
import type { CommandSpec, PredictionContext, PredictionInput, ProcessExit } from "../../src/models/model.ts";

// A 76-residue ubiquitin: short enough to read, a real protein all the same.
const UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG";
const ASPIRIN: PredictionInput = { id: "lig_aspirin", name: "aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" };
// Every character YAML could misread outside quotes: # [ ] ( ) @ \ / = % and a leading-looking "-".
const AWKWARD: PredictionInput = {
  id: "lig_awkward",
  name: "awkward",
  smiles: "N#C[C@@H]1CC%10CCCCC%10C1/C=C\\Br.[Na+]",
};
const DEFAULT_PARAMETERS: JsonObject = {
  recycling_steps: 3,
  sampling_steps: 200,
  diffusion_samples: 1,
  output_format: "mmcif",
};
const SUCCESS: ProcessExit = { code: 0, signal: null, stderrTail: "" };

async function sandbox(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "hangar-boltz-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An executable that would run, standing in for the real `boltz`. */
async function fakeExecutable(dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, name);
  await writeFile(file, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  return file;
}

function context(workDir: string, overrides: Partial<PredictionContext> = {}): PredictionContext {
  return {
    workDir,
    proteinSequence: UBIQUITIN,
    parameters: DEFAULT_PARAMETERS,
    env: { PATH: path.join(workDir, "no-such-bin") },
    ...overrides,
  };
}

const flagValue = (command: CommandSpec, flag: string): string => {
  const index = command.argv.indexOf(flag);
  assert.ok(index > 0, `argv has ${flag}`);
  return command.argv[index + 1]!;
};

/** The predictions folder Boltz writes for one record of a directory input: the documented layout. */
function predictionDir(command: CommandSpec, id: string): string {
  const inputDir = command.argv[2]!;
  return path.join(
    flagValue(command, "--out_dir"),
    `boltz_results_${path.basename(inputDir)}`,
    "predictions",
    id,
  );
}

const confidenceJson = {
  confidence_score: 0.83672,
  ptm: 0.8923,
  iptm: 0.8412,
  ligand_iptm: 0.8412,
  protein_iptm: 0,
  complex_plddt: 0.8356,
  complex_iplddt: 0.7921,
  complex_pde: 0.6032,
  complex_ipde: 1.2143,
  chains_ptm: { "0": 0.8956, "1": 0.7621 },
  pair_chains_iptm: { "0": { "0": 0.8956, "1": 0.8215 }, "1": { "0": 0.8608, "1": 0.7621 } },
};
const affinityJson = {
  affinity_pred_value: -0.8513,
  affinity_probability_binary: 0.7342,
  affinity_pred_value1: -0.9127,
  affinity_probability_binary1: 0.7716,
  affinity_pred_value2: -0.7899,
  affinity_probability_binary2: 0.6968,
};
const complexCif = (id: string) =>
  [
    `data_${id}`,
    "#",
    `_entry.id ${id}`,
    "#",
    "loop_",
    "_atom_site.group_PDB",
    "_atom_site.id",
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
    "ATOM   1 N N   . MET A 1 1 ? 12.631 -3.415 7.902  1.00 81.22 1 A 1",
    "ATOM   2 C CA  . MET A 1 1 ? 13.874 -2.672 7.611  1.00 83.47 1 A 1",
    "ATOM   3 C C   . MET A 1 1 ? 14.102 -1.390 8.412  1.00 84.05 1 A 1",
    "HETATM 4 C C1  . LIG B 2 . ? 4.218  1.905  -2.336 1.00 78.10 1 B 1",
    "HETATM 5 O O1  . LIG B 2 . ? 5.004  2.771  -1.902 1.00 76.93 1 B 1",
    "#",
    "",
  ].join("\n");

/** Writes what `boltz predict` writes for one record; `skip` leaves files out, `replace` corrupts them. */
async function writeBoltzOutputs(
  command: CommandSpec,
  id: string,
  options: { skip?: string[]; replace?: Record<string, string>; extension?: "cif" | "pdb" } = {},
): Promise<string> {
  const dir = predictionDir(command, id);
  await mkdir(dir, { recursive: true });
  const extension = options.extension ?? "cif";
  const files: Record<string, string> = {
    [`${id}_model_0.${extension}`]: complexCif(id),
    [`confidence_${id}_model_0.json`]: JSON.stringify(confidenceJson, null, 4),
    [`affinity_${id}.json`]: JSON.stringify(affinityJson, null, 4),
    [`pae_${id}_model_0.npz`]: "PK\u0003\u0004",
    [`plddt_${id}_model_0.npz`]: "PK\u0003\u0004",
    ...options.replace,
  };
  for (const [name, text] of Object.entries(files)) {
    if (!options.skip?.includes(name)) await writeFile(path.join(dir, name), text);
  }
  return dir;
}

/** Reads a single-quoted YAML scalar back the way a YAML parser would: `''` is one quote. */
function singleQuotedValue(yaml: string, key: string): string | undefined {
  const match = new RegExp(`^\\s+${key}: '((?:[^']|'')*)'$`, "m").exec(yaml);
  return match?.[1]?.replaceAll("''", "'");
}

describe("Boltz-2 spec", () => {
  it("declares the affinity score, GPU needs and packing", () => {
    assert.equal(boltz2Spec.name, "boltz2");
    assert.equal(boltz2Spec.target, "protein_sequence");
    assert.deepEqual(boltz2Spec.resources, { accelerator: "gpu", minGpuMemoryGiB: 24 });
    assert.deepEqual(
      { name: boltz2Spec.score.name, unit: boltz2Spec.score.unit, better: boltz2Spec.score.better },
      { name: "affinity_pred_value", unit: "log10(IC50/µM)", better: "lower" },
    );
    assert.equal(boltz2Spec.maxLigandAtoms, 128);
    assert.equal(boltz2Spec.parameters.output_format?.default, "mmcif");
    assert.deepEqual(boltz2Spec.parameters.output_format?.enum, ["mmcif", "pdb"]);
    assert.ok(boltz2Spec.packing.perProcess > 1);
  });
});

describe("Boltz2Runner.checkInstalled", () => {
  const runner = new Boltz2Runner();

  it("names the command and HANGAR_BOLTZ_CMD when boltz is not on PATH", async (t) => {
    const dir = await sandbox(t);
    const message = await runner.checkInstalled({ PATH: dir });
    assert.ok(message);
    assert.match(message, /"boltz"/);
    assert.match(message, /HANGAR_BOLTZ_CMD/);
    assert.match(message, /pip install boltz/);
  });

  it("finds boltz on the PATH it is given", async (t) => {
    const dir = await sandbox(t);
    await fakeExecutable(path.join(dir, "bin"), "boltz");
    assert.equal(
      await runner.checkInstalled({ PATH: `${path.join(dir, "empty")}:${path.join(dir, "bin")}` }),
      null,
    );
  });

  it("takes HANGAR_BOLTZ_CMD as an absolute path", async (t) => {
    const dir = await sandbox(t);
    const boltz = await fakeExecutable(path.join(dir, "venv", "bin"), "boltz");
    assert.equal(await runner.checkInstalled({ HANGAR_BOLTZ_CMD: boltz, PATH: "" }), null);
  });

  it("refuses a file that is not executable", async (t) => {
    const dir = await sandbox(t);
    const file = path.join(dir, "boltz");
    await writeFile(file, "#!/bin/sh\n", { mode: 0o644 });
    const message = await runner.checkInstalled({ HANGAR_BOLTZ_CMD: file });
    assert.ok(message);
    assert.match(message, /HANGAR_BOLTZ_CMD/);
    assert.ok(message.includes(file));
  });

  it("names the cache variable whose directory is missing", async (t) => {
    const dir = await sandbox(t);
    await fakeExecutable(path.join(dir, "bin"), "boltz");
    const PATH = path.join(dir, "bin");
    const missing = path.join(dir, "no-cache");
    const fromHangar = await runner.checkInstalled({ PATH, HANGAR_BOLTZ_CACHE: missing, BOLTZ_CACHE: dir });
    assert.ok(fromHangar?.includes("HANGAR_BOLTZ_CACHE") && fromHangar.includes(missing));
    const fromBoltz = await runner.checkInstalled({ PATH, BOLTZ_CACHE: missing });
    assert.ok(fromBoltz?.includes("BOLTZ_CACHE") && !fromBoltz.includes("HANGAR_BOLTZ_CACHE"));
    assert.equal(await runner.checkInstalled({ PATH, BOLTZ_CACHE: dir }), null);
  });
});

describe("Boltz2Runner.prepare", () => {
  const runner = new Boltz2Runner();

  it("writes one documented YAML per input and the predict command", async (t) => {
    const dir = await sandbox(t);
    const workDir = path.join(dir, "work");
    const boltz = await fakeExecutable(path.join(dir, "bin"), "boltz");
    const cache = path.join(dir, "cache");
    await mkdir(cache);
    const ctx = context(workDir, {
      parameters: { ...DEFAULT_PARAMETERS, seed: 42 },
      env: { PATH: path.join(dir, "bin"), HANGAR_BOLTZ_CACHE: cache },
    });
    await runner.prepareShared(ctx);
    const { command, failed } = await runner.prepare([ASPIRIN, AWKWARD], ctx);

    assert.deepEqual(failed, []);
    assert.ok(command);
    const inputDir = path.join(workDir, "boltz_in_1");
    assert.deepEqual(command.argv, [
      boltz,
      "predict",
      inputDir,
      "--out_dir",
      path.join(workDir, "boltz_out_1"),
      "--accelerator",
      "gpu",
      "--devices",
      "1",
      "--recycling_steps",
      "3",
      "--sampling_steps",
      "200",
      "--diffusion_samples",
      "1",
      "--output_format",
      "mmcif",
      "--cache",
      cache,
      "--seed",
      "42",
      "--override",
    ]);
    assert.deepEqual(command.inputIds, ["lig_aspirin", "lig_awkward"]);
    assert.equal(command.cwd, workDir);
    assert.deepEqual((await readdir(inputDir)).sort(), ["lig_aspirin.yaml", "lig_awkward.yaml"]);

    const yaml = await readFile(path.join(inputDir, "lig_awkward.yaml"), "utf8");
    assert.equal(
      yaml,
      [
        "version: 1",
        "sequences:",
        "  - protein:",
        "      id: A",
        `      sequence: '${UBIQUITIN}'`,
        "      msa: empty",
        "  - ligand:",
        "      id: B",
        "      smiles: 'N#C[C@@H]1CC%10CCCCC%10C1/C=C\\Br.[Na+]'",
        "properties:",
        "  - affinity:",
        "      binder: B",
        "",
      ].join("\n"),
    );
    assert.equal(singleQuotedValue(yaml, "smiles"), AWKWARD.smiles);
    assert.equal(singleQuotedValue(yaml, "sequence"), UBIQUITIN);
    const aspirinYaml = await readFile(path.join(inputDir, "lig_aspirin.yaml"), "utf8");
    assert.equal(singleQuotedValue(aspirinYaml, "smiles"), ASPIRIN.smiles);
  });

  it("doubles a single quote inside the quoted SMILES", async (t) => {
    const workDir = await sandbox(t);
    const odd: PredictionInput = { id: "lig_quote", name: "quote", smiles: "C'C" };
    const { command } = await runner.prepare([odd], context(workDir));
    assert.ok(command);
    const yaml = await readFile(path.join(command.argv[2]!, "lig_quote.yaml"), "utf8");
    assert.match(yaml, /^ {6}smiles: 'C''C'$/m);
    assert.equal(singleQuotedValue(yaml, "smiles"), "C'C");
  });

  it("asks the MSA server instead of running single-sequence when one is set", async (t) => {
    const workDir = await sandbox(t);
    const url = "https://api.colabfold.com";
    const ctx = context(workDir, {
      parameters: { ...DEFAULT_PARAMETERS, msa_server_url: url, output_format: "pdb" },
    });
    const { command } = await runner.prepare([ASPIRIN], ctx);
    assert.ok(command);
    assert.equal(command.argv[0], "boltz", "falls back to the bare name when it is not on PATH");
    assert.deepEqual(command.argv.slice(-4), ["--use_msa_server", "--msa_server_url", url, "--override"]);
    assert.equal(flagValue(command, "--output_format"), "pdb");
    assert.ok(!command.argv.includes("--cache"));
    assert.ok(!command.argv.includes("--seed"));
    const yaml = await readFile(path.join(command.argv[2]!, "lig_aspirin.yaml"), "utf8");
    assert.ok(!yaml.includes("msa:"), yaml);
    assert.match(yaml, /^ {6}sequence: 'MQIF[A-Z]+'\n {2}- ligand:$/m);
  });

  it("points every input at a precomputed MSA file, which wins over the server", async (t) => {
    const workDir = await sandbox(t);
    const msaPath = path.join(workDir, "msa", "ubiquitin.a3m");
    const ctx = context(workDir, {
      msaPath,
      parameters: { ...DEFAULT_PARAMETERS, msa_server_url: "https://api.colabfold.com" },
    });
    const { command } = await runner.prepare([ASPIRIN], ctx);
    assert.ok(command);
    assert.ok(!command.argv.includes("--use_msa_server"), "no server round trip when the MSA is given");
    const yaml = await readFile(path.join(command.argv[2]!, "lig_aspirin.yaml"), "utf8");
    assert.equal(singleQuotedValue(yaml, "msa"), msaPath);
    assert.match(yaml, /^ {6}sequence: 'MQIF[A-Z]+'\n {6}msa: '/m, "the MSA belongs to the protein entry");
  });

  it("gives each batch its own input and output directories", async (t) => {
    const workDir = await sandbox(t);
    const first = await runner.prepare([ASPIRIN], context(workDir));
    const second = await runner.prepare([AWKWARD], context(workDir));
    assert.equal(path.basename(first.command!.argv[2]!), "boltz_in_1");
    assert.equal(path.basename(second.command!.argv[2]!), "boltz_in_2");
    assert.equal(path.basename(flagValue(second.command!, "--out_dir")), "boltz_out_2");
  });

  it("fails every input and starts nothing without a protein sequence", async (t) => {
    const workDir = await sandbox(t);
    const { command, failed } = await runner.prepare(
      [ASPIRIN, AWKWARD],
      context(workDir, { proteinSequence: undefined }),
    );
    assert.equal(command, null);
    assert.deepEqual(
      failed.map((result) => [result.inputId, result.status, result.error?.code]),
      [
        ["lig_aspirin", "failed", "missing_protein_sequence"],
        ["lig_awkward", "failed", "missing_protein_sequence"],
      ],
    );
    assert.match(failed[0]!.error!.message, /protein sequence/);
    assert.deepEqual(await readdir(workDir), []);
  });

  it("fails an input whose SMILES cannot be written on one YAML line, and keeps the rest", async (t) => {
    const workDir = await sandbox(t);
    const broken: PredictionInput = { id: "lig_broken", name: "broken", smiles: "CC\nO" };
    const { command, failed } = await runner.prepare([broken, ASPIRIN], context(workDir));
    assert.deepEqual(command?.inputIds, ["lig_aspirin"]);
    assert.deepEqual(
      failed.map((result) => [result.inputId, result.error?.code]),
      [["lig_broken", "invalid_smiles"]],
    );
  });
});

describe("Boltz2Runner.parse", () => {
  const runner = new Boltz2Runner();

  it("reads affinity, confidence and the model_0 structure of a finished ligand", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    const { command } = await runner.prepare([ASPIRIN], ctx);
    assert.ok(command);
    const dir = await writeBoltzOutputs(command, ASPIRIN.id);

    const [result] = await runner.parse([ASPIRIN], ctx, SUCCESS);
    assert.ok(result);
    assert.equal(result.status, "succeeded", JSON.stringify(result.error));
    assert.equal(result.inputId, "lig_aspirin");
    assert.equal(result.score, -0.8513);
    assert.equal(result.confidence.pIC50, 6 - -0.8513);
    assert.ok(Math.abs(result.confidence.pIC50! - 6.8513) < 1e-12);
    assert.ok(Math.abs(result.confidence.IC50_uM! - 0.14083) < 1e-4);
    assert.deepEqual(
      { ...result.confidence, pIC50: undefined, IC50_uM: undefined },
      {
        affinity_probability_binary: 0.7342,
        pIC50: undefined,
        IC50_uM: undefined,
        confidence_score: 0.83672,
        iptm: 0.8412,
        ptm: 0.8923,
        ligand_iptm: 0.8412,
        complex_plddt: 0.8356,
      },
    );
    assert.deepEqual(result.details, {
      affinity_pred_value1: -0.9127,
      affinity_pred_value2: -0.7899,
      affinity_probability_binary1: 0.7716,
      affinity_probability_binary2: 0.6968,
      confidence: confidenceJson,
    });
    assert.deepEqual(result.structures, [
      { path: path.join(dir, "lig_aspirin_model_0.cif"), format: "cif", role: "complex" },
    ]);
    assert.ok(path.isAbsolute(result.structures[0]!.path));
  });

  it("fails one ligand for a missing affinity file and another for malformed JSON, and keeps the good one", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    const noAffinity: PredictionInput = { id: "lig_noaff", name: "no affinity", smiles: "c1ccccc1O" };
    const malformed: PredictionInput = { id: "lig_malformed", name: "malformed", smiles: "CCN(CC)CC" };
    const { command } = await runner.prepare([ASPIRIN, noAffinity, malformed], ctx);
    assert.ok(command);
    await writeBoltzOutputs(command, ASPIRIN.id);
    await writeBoltzOutputs(command, noAffinity.id, { skip: ["affinity_lig_noaff.json"] });
    await writeBoltzOutputs(command, malformed.id, {
      replace: { "confidence_lig_malformed_model_0.json": '{\n    "confidence_score": 0.8,\n    "ptm": ' },
    });

    const results = await runner.parse([ASPIRIN, noAffinity, malformed], ctx, SUCCESS);
    assert.deepEqual(
      results.map((result) => [result.inputId, result.status, result.error?.code]),
      [
        ["lig_aspirin", "succeeded", undefined],
        ["lig_noaff", "failed", "output_missing"],
        ["lig_malformed", "failed", "output_malformed"],
      ],
    );
    const [, missing, broken] = results;
    assert.match(missing!.error!.message, /affinity_lig_noaff\.json/);
    assert.doesNotMatch(missing!.error!.message, /confidence_lig_noaff/);
    assert.equal(missing!.score, undefined);
    assert.deepEqual(missing!.structures, []);
    assert.match(broken!.error!.message, /confidence_lig_malformed_model_0\.json/);
  });

  it("fails a ligand whose affinity holds no number", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    const { command } = await runner.prepare([ASPIRIN], ctx);
    await writeBoltzOutputs(command!, ASPIRIN.id, {
      replace: {
        "affinity_lig_aspirin.json": JSON.stringify({ ...affinityJson, affinity_pred_value: null }),
      },
    });
    const [result] = await runner.parse([ASPIRIN], ctx, SUCCESS);
    assert.equal(result?.error?.code, "output_malformed");
    assert.match(result!.error!.message, /affinity_pred_value/);
  });

  it("puts the exit code and stderr tail in the error of a ligand the crashed process never reached", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    const { command } = await runner.prepare([ASPIRIN, AWKWARD], ctx);
    assert.ok(command);
    await writeBoltzOutputs(command, ASPIRIN.id);
    const stderrTail =
      "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)";
    const crashed: ProcessExit = { code: 1, signal: null, stderrTail };

    const [done, unreached] = await runner.parse([ASPIRIN, AWKWARD], ctx, crashed);
    assert.equal(done?.status, "succeeded", "outputs written before the crash still count");
    assert.equal(unreached?.status, "failed");
    assert.equal(unreached?.error?.code, "process_failed");
    assert.match(unreached!.error!.message, /boltz exited with code 1: torch\.OutOfMemoryError/);
    assert.ok(unreached!.error!.message.includes(stderrTail));
    assert.match(unreached!.error!.message, /affinity_lig_awkward\.json/);
  });

  it("names the signal that killed the process", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    await runner.prepare([ASPIRIN], ctx);
    const [result] = await runner.parse([ASPIRIN], ctx, { code: null, signal: "SIGKILL", stderrTail: "" });
    assert.match(result!.error!.message, /boltz was killed by signal SIGKILL/);
  });

  it("reads the PDB structure when output_format is pdb", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir, { parameters: { ...DEFAULT_PARAMETERS, output_format: "pdb" } });
    const { command } = await runner.prepare([ASPIRIN], ctx);
    const dir = await writeBoltzOutputs(command!, ASPIRIN.id, { extension: "pdb" });
    const [result] = await runner.parse([ASPIRIN], ctx, SUCCESS);
    assert.equal(result?.status, "succeeded");
    assert.deepEqual(result.structures, [
      { path: path.join(dir, "lig_aspirin_model_0.pdb"), format: "pdb", role: "complex" },
    ]);
  });

  it("reads a retried ligand from its latest batch", async (t) => {
    const workDir = await sandbox(t);
    const ctx = context(workDir);
    const first = await runner.prepare([ASPIRIN], ctx);
    await writeBoltzOutputs(first.command!, ASPIRIN.id, { skip: ["affinity_lig_aspirin.json"] });
    const retry = await runner.prepare([ASPIRIN], ctx);
    await writeBoltzOutputs(retry.command!, ASPIRIN.id);
    const [result] = await runner.parse([ASPIRIN], ctx, SUCCESS);
    assert.equal(result?.status, "succeeded");
    assert.ok(result.structures[0]!.path.includes(`${path.sep}boltz_out_2${path.sep}`));
  });

  it("fails an input that was never prepared", async (t) => {
    const workDir = await sandbox(t);
    const [result] = await runner.parse([ASPIRIN], context(workDir), SUCCESS);
    assert.equal(result?.error?.code, "not_prepared");
  });
});
