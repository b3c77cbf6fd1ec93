import { type ExecFileException, execFile } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { receptorFileFormat } from "../../chem/receptor.ts";
import type { JsonObject } from "../../domain/json.ts";
import type {
  CommandSpec,
  ModelRunner,
  PredictionContext,
  PredictionInput,
  PredictionResult,
  ProcessExit,
  StructureFile,
} from "../model.ts";
import {
  type ExecutableSource,
  executableForCommand,
  failedResult,
  integerParameter,
  isFiniteNumber,
  missingExecutableMessage,
  processFailure,
  stringParameter,
} from "../shared.ts";
import { vinaSpec } from "./spec.ts";

type Env = Record<string, string | undefined>;

const VINA: ExecutableSource = {
  variable: "HANGAR_VINA_CMD",
  defaultCommand: "vina",
  installHint: "install the Debian package autodock-vina (apt-get install autodock-vina)",
};

const OBABEL: ExecutableSource = {
  variable: "HANGAR_OBABEL_CMD",
  defaultCommand: "obabel",
  installHint: "install the Debian package openbabel (apt-get install openbabel)",
};

// --gen3d can stall on large macrocycles; a whole receptor takes well under a second but allow for big ones.
const LIGAND_PREPARATION_TIMEOUT_MS = 120_000;
const RECEPTOR_PREPARATION_TIMEOUT_MS = 300_000;
const POSE_CONVERSION_TIMEOUT_MS = 60_000;
const VERSION_TIMEOUT_MS = 10_000;
const STDERR_TAIL_CHARS = 2_000;

const CLEAN_RECEPTOR_FILE = "receptor.clean.pdb";
const PREPARED_RECEPTOR_FILE = "receptor.prepared.pdbqt";
const ligandFile = (inputId: string): string => `${inputId}.ligand.pdbqt`;
const dockedFile = (inputId: string): string => `${inputId}.docked.pdbqt`;
const poseSdfFile = (inputId: string): string => `${inputId}.pose.sdf`;

const BOX_PARAMETERS = ["center_x", "center_y", "center_z", "size_x", "size_y", "size_z"] as const;
type Box = Record<(typeof BOX_PARAMETERS)[number], number>;

/** One pose as Vina ranks it: `REMARK VINA RESULT: affinity rmsd_lb rmsd_ub` under `MODEL n`. */
export type VinaMode = {
  mode: number;
  affinity_kcal_mol: number;
  rmsd_lb: number;
  rmsd_ub: number;
};

/** The modes of a Vina output PDBQT, in file order (Vina writes the best first). */
export function parseVinaModes(pdbqt: string): VinaMode[] {
  const modes: VinaMode[] = [];
  let modelNumber: number | null = null;
  for (const line of pdbqt.split(/\r?\n/)) {
    const model = /^MODEL\s+(\d+)/.exec(line);
    if (model) {
      modelNumber = Number(model[1]);
      continue;
    }
    const result = /^REMARK VINA RESULT:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(line);
    if (!result) continue;
    const [affinity, rmsdLowerBound, rmsdUpperBound] = [result[1], result[2], result[3]].map(Number);
    if (!isFiniteNumber(affinity) || !isFiniteNumber(rmsdLowerBound) || !isFiniteNumber(rmsdUpperBound)) {
      continue;
    }
    modes.push({
      mode: modelNumber ?? modes.length + 1,
      affinity_kcal_mol: affinity,
      rmsd_lb: rmsdLowerBound,
      rmsd_ub: rmsdUpperBound,
    });
    modelNumber = null;
  }
  return modes;
}

const WATER_RESIDUES = new Set(["HOH", "WAT", "H2O", "DOD", "SOL"]);
const ELEMENT_FIELD = /^\s*[A-Za-z]{1,2}\s*$|^\s*$/;
const CHARGE_FIELD = /^\s*$|^[0-9][+-]$/;

/**
 * Old PDB files carry an ID and line number in columns 73–80; openbabel then reads digits as the element
 * and charge (one warning per atom). Dropping columns 77–80 makes it take the element from the atom name.
 */
function withoutMisplacedElementColumns(atomLine: string): string {
  const element = atomLine.slice(76, 78);
  const charge = atomLine.slice(78, 80);
  return ELEMENT_FIELD.test(element) && CHARGE_FIELD.test(charge)
    ? atomLine
    : atomLine.slice(0, 76).trimEnd();
}

/**
 * The receptor as Vina wants it: protein ATOM records only (no waters, ligands, ions or other HETATM),
 * the first model of an ensemble, and the first alternate location of each residue.
 */
export function cleanReceptorPdb(pdb: string): { text: string; atoms: number } {
  const kept: string[] = [];
  const chosenAltLocation = new Map<string, string>();
  let atoms = 0;
  for (const line of pdb.split(/\r?\n/)) {
    if (line.startsWith("ENDMDL")) break;
    if (line.startsWith("TER")) {
      kept.push(line);
      continue;
    }
    if (!line.startsWith("ATOM  ")) continue;
    if (WATER_RESIDUES.has(line.slice(17, 20).trim())) continue;
    const altLocation = line.charAt(16);
    if (altLocation !== " " && altLocation !== "") {
      const residue = line.slice(17, 27);
      const chosen = chosenAltLocation.get(residue) ?? altLocation;
      chosenAltLocation.set(residue, chosen);
      if (altLocation !== chosen) continue;
    }
    kept.push(withoutMisplacedElementColumns(line));
    atoms += 1;
  }
  kept.push("END");
  return { text: `${kept.join("\n")}\n`, atoms };
}

interface ToolRun {
  /** Null when the tool exited 0; otherwise how it ended, e.g. `exited with code 1`. */
  failure: string | null;
  stdout: string;
  stderr: string;
}

function describeExecFailure(error: ExecFileException, timeoutMs: number): string {
  if (error.killed && error.signal === "SIGKILL") return `timed out after ${timeoutMs / 1000} s`;
  if (typeof error.code === "number") return `exited with code ${error.code}`;
  if (error.signal) return `was killed by signal ${error.signal}`;
  return `could not run (${error.message})`;
}

/** Runs a tool with an argv array (never a shell: SMILES and names may hold any character). */
function runTool(
  executable: string,
  args: string[],
  cwd: string,
  env: Env,
  timeoutMs: number,
): Promise<ToolRun> {
  return new Promise((resolve) => {
    execFile(
      executable,
      args,
      { cwd, env, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024, encoding: "utf8" },
      (error, stdout, stderr) => {
        resolve({ failure: error ? describeExecFailure(error, timeoutMs) : null, stdout, stderr });
      },
    );
  });
}

const NOISE_LINE = /^$|^=+$|^[1-9]\d* molecules? converted$/;

/** openbabel's stderr without separators, blank lines and success counts; last part only. */
function stderrTail(stderr: string): string {
  const lines = stderr.split(/\r?\n/).filter((line) => !NOISE_LINE.test(line.trim()));
  const text = lines.join("\n");
  return text.length <= STDERR_TAIL_CHARS ? text : `…${text.slice(-STDERR_TAIL_CHARS)}`;
}

async function readTextIfPresent(file: string): Promise<string | null> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

async function isFile(candidate: string): Promise<boolean> {
  try {
    return (await stat(candidate)).isFile();
  } catch {
    return false;
  }
}

const hasAtoms = (structure: string): boolean => /^(ATOM|HETATM) /m.test(structure);

function requireReceptorPath(context: PredictionContext): string {
  if (!context.receptorPath) throw new Error("vina needs a receptor structure, but the work unit has none");
  return context.receptorPath;
}

/** Where `prepareShared` leaves the receptor PDBQT: the upload itself when it already is one. */
function preparedReceptorPath(context: PredictionContext): string {
  const receptorPath = requireReceptorPath(context);
  return receptorFileFormat(receptorPath) === "pdbqt"
    ? path.resolve(receptorPath)
    : path.resolve(context.workDir, PREPARED_RECEPTOR_FILE);
}

function readBox(parameters: JsonObject): Box | null {
  const box: Partial<Box> = {};
  for (const name of BOX_PARAMETERS) {
    const value = parameters[name];
    if (!isFiniteNumber(value)) return null;
    box[name] = value;
  }
  return box as Box;
}

function numberParameter(parameters: JsonObject, name: string): number | undefined {
  const value = parameters[name] ?? vinaSpec.parameters[name]?.default;
  return isFiniteNumber(value) ? value : undefined;
}

/** The search settings as Vina flags, or what is wrong with them. */
function searchArguments(parameters: JsonObject): { args: string[] } | { problem: string } {
  const settings: [string, number | string | undefined][] = [
    ["exhaustiveness", integerParameter(vinaSpec, parameters, "exhaustiveness")],
    ["num_modes", integerParameter(vinaSpec, parameters, "num_modes")],
    ["energy_range", numberParameter(parameters, "energy_range")],
    ["seed", integerParameter(vinaSpec, parameters, "seed")],
    ["scoring", stringParameter(vinaSpec, parameters, "scoring")],
  ];
  const args: string[] = [];
  for (const [name, value] of settings) {
    if (value === undefined) return { problem: `parameter ${name} is missing or has the wrong type` };
    args.push(`--${name}`, String(value));
  }
  return { args };
}

/** A title for the pose SDF: the user's name on one line, else the input id. */
function poseTitle(input: PredictionInput): string {
  const title = input.name
    .replace(/[\p{Cc}\p{Zl}\p{Zp}]+/gu, " ")
    .trim()
    .slice(0, 80);
  return title === "" ? input.id : title;
}

function onlyInput(inputs: PredictionInput[]): PredictionInput {
  const [input] = inputs;
  if (inputs.length !== 1 || !input) {
    throw new Error(`vina docks one ligand per process (packing.perProcess = 1), got ${inputs.length}`);
  }
  return input;
}

/** AutoDock Vina through its command line, with openbabel preparing receptor and ligands. */
export class VinaRunner implements ModelRunner {
  readonly spec = vinaSpec;
  readonly #versions = new Map<string, Promise<string | null>>();

  async checkInstalled(env: Env): Promise<string | null> {
    const missing = await Promise.all([
      missingExecutableMessage(VINA, env),
      missingExecutableMessage(OBABEL, env),
    ]);
    const messages = missing.filter((message) => message !== null);
    return messages.length === 0 ? null : messages.join("; ");
  }

  async prepareShared(context: PredictionContext): Promise<void> {
    const receptorPath = requireReceptorPath(context);
    const format = receptorFileFormat(receptorPath);
    if (format === null) {
      throw new Error(`receptor ${path.basename(receptorPath)}: vina takes a .pdb, .ent or .pdbqt file`);
    }
    const original = await readFile(receptorPath, "utf8");
    if (format === "pdbqt") {
      if (!hasAtoms(original)) throw new Error(`receptor ${path.basename(receptorPath)} has no ATOM records`);
      return;
    }

    const cleaned = cleanReceptorPdb(original);
    if (cleaned.atoms === 0) {
      throw new Error(
        `receptor ${path.basename(receptorPath)} has no protein ATOM records once waters and HETATM are removed`,
      );
    }
    const cleanPath = path.resolve(context.workDir, CLEAN_RECEPTOR_FILE);
    const outputPath = preparedReceptorPath(context);
    await writeFile(cleanPath, cleaned.text);
    const obabel = await this.#executable(OBABEL, context.env);
    // -xr: rigid receptor (no torsion tree), which Vina reads; -h: add the hydrogens PDB files lack.
    const run = await runTool(
      obabel,
      [cleanPath, "-xr", "-h", "-O", outputPath],
      context.workDir,
      context.env,
      RECEPTOR_PREPARATION_TIMEOUT_MS,
    );
    const prepared = run.failure === null ? await readTextIfPresent(outputPath) : null;
    if (prepared === null || !hasAtoms(prepared)) {
      const how = run.failure ?? "wrote no atoms";
      throw new Error(
        `openbabel could not convert receptor ${path.basename(receptorPath)} to PDBQT (${how}): ${stderrTail(run.stderr)}`,
      );
    }
  }

  async prepare(
    inputs: PredictionInput[],
    context: PredictionContext,
  ): Promise<{ command: CommandSpec | null; failed: PredictionResult[] }> {
    const input = onlyInput(inputs);
    const fail = (code: string, message: string) => ({
      command: null,
      failed: [failedResult(input.id, { code, message })],
    });

    const box = readBox(context.parameters);
    if (box === null)
      return fail("box_not_set", "box not set: give center_x/y/z and size_x/y/z or box_ligand");
    if (box.size_x <= 0 || box.size_y <= 0 || box.size_z <= 0) {
      return fail("invalid_parameters", "box sizes size_x/y/z must be positive (Å)");
    }
    const search = searchArguments(context.parameters);
    if ("problem" in search) return fail("invalid_parameters", search.problem);

    const receptorPath = preparedReceptorPath(context);
    if (!(await isFile(receptorPath))) {
      throw new Error(`receptor not prepared at ${receptorPath}: prepareShared must run before prepare`);
    }
    const [vina, obabel] = await Promise.all([
      this.#executable(VINA, context.env),
      this.#executable(OBABEL, context.env),
    ]);

    const ligandPath = path.resolve(context.workDir, ligandFile(input.id));
    const run = await runTool(
      obabel,
      [`-:${input.smiles}`, "--gen3d", "-h", "-O", ligandPath],
      context.workDir,
      context.env,
      LIGAND_PREPARATION_TIMEOUT_MS,
    );
    const problem = run.failure ?? (await ligandProblem(ligandPath));
    if (problem !== null) {
      const detail = stderrTail(run.stderr);
      return fail(
        "ligand_preparation_failed",
        `openbabel could not prepare ${input.name} (${input.smiles}): ${problem}${detail ? `: ${detail}` : ""}`,
      );
    }

    const boxArgs = BOX_PARAMETERS.flatMap((name) => [`--${name}`, String(box[name])]);
    return {
      command: {
        argv: [
          vina,
          "--receptor",
          receptorPath,
          "--ligand",
          ligandPath,
          ...boxArgs,
          ...search.args,
          // One thread each: the agent runs one process per core side by side.
          "--cpu",
          "1",
          "--out",
          path.resolve(context.workDir, dockedFile(input.id)),
        ],
        cwd: context.workDir,
        inputIds: [input.id],
      },
      failed: [],
    };
  }

  async parse(
    inputs: PredictionInput[],
    context: PredictionContext,
    exit: ProcessExit,
  ): Promise<PredictionResult[]> {
    return Promise.all(inputs.map((input) => this.#parseOne(input, context, exit)));
  }

  async #parseOne(
    input: PredictionInput,
    context: PredictionContext,
    exit: ProcessExit,
  ): Promise<PredictionResult> {
    const dockedPath = path.resolve(context.workDir, dockedFile(input.id));
    const failure = processFailure("vina", exit);
    if (failure !== null) return failedResult(input.id, { code: "vina_failed", message: failure });

    const docked = await readTextIfPresent(dockedPath);
    const modes = docked === null ? [] : parseVinaModes(docked);
    const best = modes[0];
    if (!best) {
      const what = docked === null ? "did not write" : "wrote no poses in";
      const tail = exit.stderrTail.trim();
      return failedResult(input.id, {
        code: "vina_failed",
        message: `vina exited with code 0 but ${what} ${dockedPath}${tail ? `: ${tail}` : ""}`,
      });
    }

    const details: JsonObject = { modes };
    const version = await this.#vinaVersion(context.env);
    if (version !== null) details.vina_version = version;
    const structures: StructureFile[] = [{ path: dockedPath, format: "pdbqt", role: "pose" }];
    const sdfPath = path.resolve(context.workDir, poseSdfFile(input.id));
    const conversionProblem = await this.#convertBestPoseToSdf(input, dockedPath, sdfPath, context);
    if (conversionProblem === null) structures.push({ path: sdfPath, format: "sdf", role: "pose" });
    else details.pose_sdf_error = conversionProblem;
    // gen3d conformers are random: the docked input is what reproduces this result with `vina` alone.
    const ligandPath = path.resolve(context.workDir, ligandFile(input.id));
    if (await isFile(ligandPath)) structures.push({ path: ligandPath, format: "pdbqt", role: "ligand" });

    return {
      inputId: input.id,
      status: "succeeded",
      score: best.affinity_kcal_mol,
      // Vina has no confidence measure; its modes (in details) are the honest extra information.
      confidence: {},
      details,
      structures,
    };
  }

  /** Null on success; otherwise why the SDF is missing (the PDBQT pose stays the result). */
  async #convertBestPoseToSdf(
    input: PredictionInput,
    dockedPath: string,
    sdfPath: string,
    context: PredictionContext,
  ): Promise<string | null> {
    const missing = await missingExecutableMessage(OBABEL, context.env);
    if (missing !== null) return `only the PDBQT pose is available: ${missing}`;
    const obabel = await executableForCommand(OBABEL, context.env);
    const run = await runTool(
      obabel,
      [dockedPath, "-l", "1", "--title", poseTitle(input), "-O", sdfPath],
      context.workDir,
      context.env,
      POSE_CONVERSION_TIMEOUT_MS,
    );
    const sdf = run.failure === null ? await readTextIfPresent(sdfPath) : null;
    if (sdf?.includes("M  END")) return null;
    return `openbabel could not convert the best pose to SDF (${run.failure ?? "no molecule written"}): ${stderrTail(run.stderr)}`;
  }

  /** argv[0] for a tool; `checkInstalled` has already said whether it exists. */
  async #executable(source: ExecutableSource, env: Env): Promise<string> {
    const missing = await missingExecutableMessage(source, env);
    if (missing !== null) throw new Error(missing);
    return executableForCommand(source, env);
  }

  /** The exact version (`AutoDock Vina v1.2.3` → `1.2.3`), asked once per executable. */
  async #vinaVersion(env: Env): Promise<string | null> {
    const vina = await executableForCommand(VINA, env);
    let version = this.#versions.get(vina);
    if (!version) {
      version = runTool(vina, ["--version"], process.cwd(), env, VERSION_TIMEOUT_MS).then(
        (run) => /v?(\d+\.\d+(?:\.\d+)?)/.exec(run.stdout)?.[1] ?? null,
      );
      this.#versions.set(vina, version);
    }
    return version;
  }
}

/** Null when openbabel wrote one dockable molecule; otherwise what is wrong with its output. */
async function ligandProblem(ligandPath: string): Promise<string | null> {
  const ligand = await readTextIfPresent(ligandPath);
  if (ligand === null || !hasAtoms(ligand)) return "no molecule written (not a SMILES it can read?)";
  const fragments = ligand.match(/^TORSDOF/gm)?.length ?? 0;
  if (fragments > 1) {
    return `the SMILES has ${fragments} disconnected fragments; Vina docks one molecule (keep the largest)`;
  }
  return null;
}
