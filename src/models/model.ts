import type { JsonObject, JsonValue } from "../domain/json.ts";

/**
 * The model plugin contract. Each model is one folder under src/models with the same two roles:
 * - `spec.ts`: what the control plane needs to accept work (pure data and checks, no I/O);
 * - `runner.ts`: what an instance does (writes input files, builds command lines, parses outputs).
 * The agent runs every model down one path (src/agent/predict); only the executable differs.
 */

/** Which way a score is better. */
export type ScoreDirection = "lower" | "higher";

export interface ScoreSpec {
  /** Field name in results, e.g. `affinity_kcal_mol`, `affinity_pred_value`, `ranking_score`. */
  name: string;
  /** e.g. `kcal/mol`, `log10(IC50/µM)`, `` (unitless). */
  unit: string;
  better: ScoreDirection;
  description: string;
}

/** What a model needs to run one input: a receptor structure file, or a protein sequence. */
export type TargetKind = "receptor" | "protein_sequence";

export interface ModelResources {
  accelerator: "cpu" | "gpu";
  /** Least GPU memory one instance needs, GiB (GPU models only). */
  minGpuMemoryGiB?: number;
}

/** One declared parameter of a model: type, default and bounds, so the API can validate and document it. */
export interface ParameterSpec {
  type: "number" | "integer" | "string" | "boolean";
  description: string;
  default?: JsonValue;
  minimum?: number;
  maximum?: number;
  /** Allowed values for strings. */
  enum?: string[];
}

export interface ModelSpec {
  name: string;
  version: string;
  description: string;
  resources: ModelResources;
  target: TargetKind;
  score: ScoreSpec;
  /** Whether a precomputed MSA of the protein (an A3M file) can be given with the target. */
  acceptsMsa?: boolean;
  /** Heavy-atom limit per ligand, when the model has one (Boltz-2: 128). */
  maxLigandAtoms?: number;
  parameters: Record<string, ParameterSpec>;
  /**
   * How inputs are packed onto processes: `perProcess` inputs go to one process (1 for Vina, many for
   * Boltz-2 so the model loads once), and `parallel` processes run side by side on one instance
   * (`cores`: one per CPU core).
   */
  packing: { perProcess: number; parallel: number | "cores" };
  /**
   * Instance-seconds one input is expected to take, for the credit hold placed at submit (the hold
   * is settled to the real cost when the work ends, so this errs high).
   */
  expectedSecondsPerInput: number;
}

/** One ligand to predict, as the agent hands it to a runner. */
export interface PredictionInput {
  /** Unique within one work unit and safe as a file name ([A-Za-z0-9_-], ≤ 64 chars). */
  id: string;
  /** The user's name for the ligand. */
  name: string;
  /** Already reduced to its largest fragment and validated at submit. */
  smiles: string;
}

/** What every input of one work unit shares. */
export interface PredictionContext {
  /** A directory the runner owns for this work unit; inputs and outputs go under it. */
  workDir: string;
  /** Receptor file on the instance (receptor models), as uploaded (PDB or PDBQT). */
  receptorPath?: string;
  /** Protein sequence (sequence models). */
  proteinSequence?: string;
  /** The protein's precomputed MSA on the instance (A3M), when one was given (`acceptsMsa` models). */
  msaPath?: string;
  /** Validated parameters with defaults filled in. */
  parameters: JsonObject;
  /** Environment of the instance: where models find their executables, caches and weights. */
  env: Record<string, string | undefined>;
}

/** One process to start: argv[0] is the executable. */
export interface CommandSpec {
  argv: string[];
  cwd: string;
  env?: Record<string, string>;
  /** The inputs this process predicts. */
  inputIds: string[];
}

export interface StructureFile {
  /** Absolute path on the instance. */
  path: string;
  format: "pdbqt" | "sdf" | "pdb" | "cif";
  /** `ligand`: the prepared input (Vina's 3D PDBQT), kept so a docking can be re-run exactly. */
  role: "pose" | "complex" | "receptor" | "ligand";
}

export interface PredictionError {
  code: string;
  message: string;
}

export interface PredictionResult {
  inputId: string;
  status: "succeeded" | "failed";
  error?: PredictionError;
  /** The primary score (named by the spec's `score`). */
  score?: number;
  /** Confidence and secondary fields, e.g. `affinity_probability_binary`, `pIC50`, `iptm`. */
  confidence: Record<string, number>;
  /** Model-specific detail, e.g. Vina's every mode. */
  details: JsonObject;
  structures: StructureFile[];
}

export interface ModelRunner {
  readonly spec: ModelSpec;
  /**
   * Null when the model can run on this instance; otherwise what is missing and how to provide it
   * (e.g. "boltz not found on PATH; install boltz or set HANGAR_BOLTZ_CMD").
   */
  checkInstalled(env: Record<string, string | undefined>): Promise<string | null>;
  /** Once per work unit, before any `prepare` (e.g. the receptor's PDBQT for Vina). */
  prepareShared(context: PredictionContext): Promise<void>;
  /**
   * Writes the input files for `inputs` (at most `spec.packing.perProcess` of them) and returns the
   * process that predicts them. Inputs that cannot even be prepared come back as failures.
   */
  prepare(
    inputs: PredictionInput[],
    context: PredictionContext,
  ): Promise<{ command: CommandSpec | null; failed: PredictionResult[] }>;
  /** Reads what the process wrote: one result per input, failures included. */
  parse(
    inputs: PredictionInput[],
    context: PredictionContext,
    exit: ProcessExit,
  ): Promise<PredictionResult[]>;
}

export interface ProcessExit {
  code: number | null;
  signal: string | null;
  /** The last lines of its stderr, for error messages. */
  stderrTail: string;
}
