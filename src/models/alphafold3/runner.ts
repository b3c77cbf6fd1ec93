import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { JsonObject } from "../../domain/json.ts";
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
} from "../shared.ts";
import { alphafold3Spec } from "./spec.ts";

const TOOL = "run_alphafold.py";
const EXECUTABLE: ExecutableSource = {
  variable: "HANGAR_AF3_CMD",
  defaultCommand: "run_alphafold.py",
  installHint: "install AlphaFold3 on the instance with run_alphafold.py executable on PATH",
};
const MODEL_DIR_VARIABLE = "HANGAR_AF3_MODEL_DIR";
const BATCH_PREFIX = "af3";
const PROTEIN_CHAIN = "A";
const LIGAND_CHAIN = "B";
const CONFIDENCE_FIELDS = ["iptm", "ptm", "fraction_disordered"] as const;

type Env = Record<string, string | undefined>;

/**
 * AlphaFold3's `Input.sanitised_name()`, which names the output directory and files: lowercase, spaces
 * to `_`, and every other character outside [a-z0-9_.-] dropped.
 */
export function af3SanitisedName(name: string): string {
  return name
    .toLowerCase()
    .replaceAll(" ", "_")
    .replace(/[^a-z0-9_.-]/g, "");
}

/** Null when the weights directory is configured and exists; otherwise how to provide it. */
async function missingModelDirMessage(env: Env): Promise<string | null> {
  const modelDir = env[MODEL_DIR_VARIABLE];
  const provide = "set it to the directory holding the AlphaFold3 weights (obtained from Google on request)";
  if (!modelDir) return `${MODEL_DIR_VARIABLE} is not set; ${provide}`;
  if (!(await isDirectory(modelDir)))
    return `${MODEL_DIR_VARIABLE} is "${modelDir}", which is not a directory; ${provide}`;
  return null;
}

/**
 * One fold job per file. `--run_data_pipeline=false` needs every MSA field given: the precomputed A3M
 * (when there is one) by path as the unpaired MSA, so a screen's input files do not each carry a
 * copy of it (input format version 2 and later); otherwise empty MSAs. No templates either way.
 */
export function af3InputJson(
  name: string,
  seed: number,
  proteinSequence: string,
  smiles: string,
  unpairedMsaPath?: string,
): JsonObject {
  return {
    name,
    modelSeeds: [seed],
    dialect: "alphafold3",
    version: 4,
    sequences: [
      {
        protein: {
          id: PROTEIN_CHAIN,
          sequence: proteinSequence,
          ...(unpairedMsaPath ? { unpairedMsaPath } : { unpairedMsa: "" }),
          pairedMsa: "",
          templates: [],
        },
      },
      { ligand: { id: LIGAND_CHAIN, smiles } },
    ],
  };
}

export class AlphaFold3Runner implements ModelRunner {
  readonly spec = alphafold3Spec;

  async checkInstalled(env: Env): Promise<string | null> {
    return (await missingExecutableMessage(EXECUTABLE, env)) ?? (await missingModelDirMessage(env));
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
        message: "AlphaFold3 needs the target's protein sequence; none was given",
      });
    }
    const missingModelDir = await missingModelDirMessage(context.env);
    if (missingModelDir !== null) return failAll(inputs, { code: "not_installed", message: missingModelDir });
    // Ids that differ only in case would share one output directory, so AlphaFold3 would rename one.
    const firstIdByName = new Map<string, string>();
    const failed: PredictionResult[] = [];
    const ready: PredictionInput[] = [];
    for (const input of inputs) {
      const name = af3SanitisedName(input.id);
      const taken = firstIdByName.get(name);
      if (taken === undefined) {
        firstIdByName.set(name, input.id);
        ready.push(input);
      } else {
        const message = `ids ${taken} and ${input.id} both map to AlphaFold3 output name "${name}"`;
        failed.push(failedResult(input.id, { code: "name_collision", message }));
      }
    }
    if (ready.length === 0) return { command: null, failed };

    const { inputDir, outputDir } = await createBatchDirectories(context.workDir, BATCH_PREFIX);
    const seed = integerParameter(this.spec, context.parameters, "seed") ?? 1;
    const msaPath = context.msaPath ? path.resolve(context.msaPath) : undefined;
    await Promise.all(
      ready.map((input) =>
        writeFile(
          path.join(inputDir, `${input.id}.json`),
          `${JSON.stringify(af3InputJson(input.id, seed, sequence, input.smiles, msaPath), null, 2)}\n`,
        ),
      ),
    );

    const integer = (name: string) => String(integerParameter(this.spec, context.parameters, name));
    const argv = [
      await executableForCommand(EXECUTABLE, context.env),
      "--input_dir",
      inputDir,
      "--output_dir",
      outputDir,
      "--model_dir",
      path.resolve(context.env[MODEL_DIR_VARIABLE] ?? ""),
      "--run_data_pipeline=false",
      "--num_diffusion_samples",
      integer("num_diffusion_samples"),
      "--num_recycles",
      integer("num_recycles"),
    ];

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

/** Reads `<out>/<name>/`, where AlphaFold3 puts the top-ranked sample's files. */
async function parseInput(
  input: PredictionInput,
  context: PredictionContext,
  exit: ProcessExit,
): Promise<PredictionResult> {
  const { id } = input;
  const batch = await findBatchDirectories(context.workDir, BATCH_PREFIX, `${id}.json`);
  if (batch === null) return failedResult(id, notPreparedError(id, context.workDir));
  const name = af3SanitisedName(id);
  const predictionDir = path.join(batch.outputDir, name);
  const summaryFile = path.join(predictionDir, `${name}_summary_confidences.json`);
  const structureFile = path.join(predictionDir, `${name}_model.cif`);

  const missing = await missingFiles([summaryFile, structureFile]);
  if (missing.length > 0) return failedResult(id, missingOutputError(TOOL, missing, exit));

  const summary = await readOutputJson(summaryFile, TOOL, exit);
  if (!summary.ok) return failedResult(id, summary.error);
  const { ranking_score: score, has_clash: hasClash, ...rest } = summary.value;
  if (!isFiniteNumber(score)) {
    return failedResult(id, malformedOutputError(summaryFile, "ranking_score is not a number"));
  }

  const confidence = numericFields(rest, CONFIDENCE_FIELDS);
  // AlphaFold3 writes has_clash as 0.0/1.0; a boolean is accepted too.
  if (typeof hasClash === "boolean" || isFiniteNumber(hasClash)) confidence.has_clash = hasClash ? 1 : 0;
  const details: JsonObject = {};
  for (const [key, value] of Object.entries(rest)) {
    if (!(key in confidence)) details[key] = value;
  }

  return {
    inputId: id,
    status: "succeeded",
    score,
    confidence,
    details,
    structures: [{ path: structureFile, format: "cif", role: "complex" }],
  };
}
