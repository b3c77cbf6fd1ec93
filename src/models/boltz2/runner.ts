import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type {
  CommandSpec,
  ModelRunner,
  PredictionContext,
  PredictionInput,
  PredictionResult,
  ProcessExit,
} from "../model.ts";
import {
  createBatchDirectories,
  type ExecutableSource,
  executableForCommand,
  failAll,
  failedResult,
  findBatchDirectories,
  integerParameter,
  isDirectory,
  isFiniteNumber,
  malformedOutputError,
  missingExecutableMessage,
  missingFiles,
  missingOutputError,
  notPreparedError,
  numericFields,
  readOutputJson,
  stringParameter,
} from "../shared.ts";
import { boltz2Spec } from "./spec.ts";

const TOOL = "boltz";
const EXECUTABLE: ExecutableSource = {
  variable: "HANGAR_BOLTZ_CMD",
  defaultCommand: "boltz",
  installHint: "install boltz (pip install boltz) on the instance",
};
const BATCH_PREFIX = "boltz";
const PROTEIN_CHAIN = "A";
const LIGAND_CHAIN = "B";
const CONFIDENCE_FIELDS = ["confidence_score", "iptm", "ptm", "ligand_iptm", "complex_plddt"] as const;
const ENSEMBLE_FIELDS = [
  "affinity_pred_value1",
  "affinity_pred_value2",
  "affinity_probability_binary1",
  "affinity_probability_binary2",
] as const;

type Env = Record<string, string | undefined>;

/** The weights cache, when one is configured, and which variable configured it. */
function configuredCache(env: Env): { variable: string; directory: string } | null {
  for (const variable of ["HANGAR_BOLTZ_CACHE", "BOLTZ_CACHE"]) {
    const directory = env[variable];
    if (directory) return { variable, directory };
  }
  return null;
}

/** Control characters (line breaks included) cannot sit inside a single-quoted YAML scalar as written. */
const fitsYamlScalar = (text: string): boolean =>
  [...text].every((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code >= 0x20 && code !== 0x7f;
  });

/** A YAML single-quoted scalar: only `'` is special (doubled), so SMILES punctuation stays literal. */
const yamlQuoted = (text: string): string => `'${text.replaceAll("'", "''")}'`;

/**
 * Where the protein's MSA comes from: a precomputed A3M file, the MSA server, or none (`msa: empty`,
 * single-sequence; Boltz refuses a protein with no MSA line and no server).
 */
export type BoltzMsa = { file: string } | "server" | "empty";

/** One complex per file, as Boltz documents it: the protein, the ligand, and the ligand as affinity binder. */
export function boltzInputYaml(proteinSequence: string, smiles: string, msa: BoltzMsa): string {
  const msaLine = msa === "server" ? "" : `      msa: ${msa === "empty" ? "empty" : yamlQuoted(msa.file)}\n`;
  return (
    "version: 1\n" +
    "sequences:\n" +
    "  - protein:\n" +
    `      id: ${PROTEIN_CHAIN}\n` +
    `      sequence: ${yamlQuoted(proteinSequence)}\n` +
    msaLine +
    "  - ligand:\n" +
    `      id: ${LIGAND_CHAIN}\n` +
    `      smiles: ${yamlQuoted(smiles)}\n` +
    "properties:\n" +
    "  - affinity:\n" +
    `      binder: ${LIGAND_CHAIN}\n`
  );
}

const structureExtension = (context: PredictionContext): "pdb" | "cif" =>
  stringParameter(boltz2Spec, context.parameters, "output_format") === "pdb" ? "pdb" : "cif";

export class Boltz2Runner implements ModelRunner {
  readonly spec = boltz2Spec;

  async checkInstalled(env: Env): Promise<string | null> {
    const missingExecutable = await missingExecutableMessage(EXECUTABLE, env);
    if (missingExecutable !== null) return missingExecutable;
    const cache = configuredCache(env);
    if (cache !== null && !(await isDirectory(cache.directory))) {
      return (
        `${cache.variable} is "${cache.directory}", which is not a directory; create it ` +
        `(Boltz downloads its weights and mols.tar there) or unset ${cache.variable}`
      );
    }
    return null;
  }

  async prepareShared(context: PredictionContext): Promise<void> {
    await mkdir(context.workDir, { recursive: true });
  }

  async prepare(
    inputs: PredictionInput[],
    context: PredictionContext,
  ): Promise<{ command: CommandSpec | null; failed: PredictionResult[] }> {
    const sequence = context.proteinSequence ?? "";
    if (sequence === "") {
      return failAll(inputs, {
        code: "missing_protein_sequence",
        message: "Boltz-2 needs the target's protein sequence; none was given",
      });
    }
    if (!fitsYamlScalar(sequence)) {
      return failAll(inputs, {
        code: "invalid_protein_sequence",
        message: "the protein sequence contains control characters",
      });
    }
    const failed = inputs
      .filter((input) => !fitsYamlScalar(input.smiles))
      .map((input) =>
        failedResult(input.id, { code: "invalid_smiles", message: "the SMILES contains control characters" }),
      );
    const ready = inputs.filter((input) => fitsYamlScalar(input.smiles));
    if (ready.length === 0) return { command: null, failed };

    const { inputDir, outputDir } = await createBatchDirectories(context.workDir, BATCH_PREFIX);
    // A precomputed MSA wins over the server: the control plane refuses requests that give both.
    const msaServerUrl = context.msaPath
      ? undefined
      : stringParameter(this.spec, context.parameters, "msa_server_url");
    const msa: BoltzMsa = context.msaPath
      ? { file: path.resolve(context.msaPath) }
      : msaServerUrl !== undefined
        ? "server"
        : "empty";
    await Promise.all(
      ready.map((input) =>
        writeFile(path.join(inputDir, `${input.id}.yaml`), boltzInputYaml(sequence, input.smiles, msa)),
      ),
    );

    const integer = (name: string) => String(integerParameter(this.spec, context.parameters, name));
    const argv = [
      await executableForCommand(EXECUTABLE, context.env),
      "predict",
      inputDir,
      "--out_dir",
      outputDir,
      "--accelerator",
      "gpu",
      "--devices",
      "1",
      "--recycling_steps",
      integer("recycling_steps"),
      "--sampling_steps",
      integer("sampling_steps"),
      "--diffusion_samples",
      integer("diffusion_samples"),
      "--output_format",
      stringParameter(this.spec, context.parameters, "output_format") ?? "mmcif",
    ];
    const cache = configuredCache(context.env);
    if (cache !== null) argv.push("--cache", cache.directory);
    const seed = integerParameter(this.spec, context.parameters, "seed");
    if (seed !== undefined) argv.push("--seed", String(seed));
    if (msaServerUrl !== undefined) argv.push("--use_msa_server", "--msa_server_url", msaServerUrl);
    // A retried batch must predict again rather than skip inputs with earlier (possibly partial) outputs.
    argv.push("--override");

    return {
      command: { argv, cwd: path.resolve(context.workDir), inputIds: ready.map((input) => input.id) },
      failed,
    };
  }

  async parse(
    inputs: PredictionInput[],
    context: PredictionContext,
    exit: ProcessExit,
  ): Promise<PredictionResult[]> {
    return Promise.all(inputs.map((input) => parseInput(input, context, exit)));
  }
}

/** Reads `<out>/boltz_results_<input dir>/predictions/<id>/`, the layout Boltz writes for a directory input. */
async function parseInput(
  input: PredictionInput,
  context: PredictionContext,
  exit: ProcessExit,
): Promise<PredictionResult> {
  const { id } = input;
  const batch = await findBatchDirectories(context.workDir, BATCH_PREFIX, `${id}.yaml`);
  if (batch === null) return failedResult(id, notPreparedError(id, context.workDir));
  const predictionDir = path.join(
    batch.outputDir,
    `boltz_results_${path.basename(batch.inputDir)}`,
    "predictions",
    id,
  );
  const extension = structureExtension(context);
  const confidenceFile = path.join(predictionDir, `confidence_${id}_model_0.json`);
  const affinityFile = path.join(predictionDir, `affinity_${id}.json`);
  const structureFile = path.join(predictionDir, `${id}_model_0.${extension}`);

  const missing = await missingFiles([confidenceFile, affinityFile, structureFile]);
  if (missing.length > 0) return failedResult(id, missingOutputError(TOOL, missing, exit));

  const confidence = await readOutputJson(confidenceFile, TOOL, exit);
  if (!confidence.ok) return failedResult(id, confidence.error);
  const affinity = await readOutputJson(affinityFile, TOOL, exit);
  if (!affinity.ok) return failedResult(id, affinity.error);
  const score = affinity.value.affinity_pred_value;
  if (!isFiniteNumber(score)) {
    return failedResult(id, malformedOutputError(affinityFile, "affinity_pred_value is not a number"));
  }

  return {
    inputId: id,
    status: "succeeded",
    score,
    confidence: {
      ...numericFields(affinity.value, ["affinity_probability_binary"]),
      pIC50: 6 - score,
      IC50_uM: 10 ** score,
      ...numericFields(confidence.value, CONFIDENCE_FIELDS),
    },
    details: { ...numericFields(affinity.value, ENSEMBLE_FIELDS), confidence: confidence.value },
    structures: [{ path: structureFile, format: extension, role: "complex" }],
  };
}
