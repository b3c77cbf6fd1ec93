import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import type { JsonObject } from "../../src/domain/json.ts";
import type { PredictionContext, PredictionInput, ProcessExit } from "../../src/models/model.ts";
import { resolveExecutable } from "../../src/models/shared.ts";
import { cleanReceptorPdb, parseVinaModes, VinaRunner } from "../../src/models/vina/runner.ts";
import { vinaSpec } from "../../src/models/vina/spec.ts";

const HIV_PROTEASE_PDB = "/usr/share/pymol/data/tut/1hpv.pdb";
const ASPIRIN: PredictionInput = { id: "aspirin", name: "Aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" };

async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), "hangar-vina-"));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function context(workDir: string, overrides: Partial<PredictionContext> = {}): PredictionContext {
  return { workDir, parameters: {}, env: process.env, ...overrides };
}

const exited = (code: number | null, stderrTail = "", signal: string | null = null): ProcessExit => ({
  code,
  signal,
  stderrTail,
});

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

/** Why the real-tool tests cannot run here, or false when they can. */
async function toolsMissing(): Promise<string | false> {
  const [vina, obabel] = await Promise.all([
    resolveExecutable("vina", process.env),
    resolveExecutable("obabel", process.env),
  ]);
  if (!vina || !obabel) return "vina or obabel not installed (Debian: autodock-vina, openbabel)";
  if (!(await exists(HIV_PROTEASE_PDB))) return `${HIV_PROTEASE_PDB} missing (Debian: pymol-data)`;
  return false;
}
const skipRealTools = await toolsMissing();

/** Three poses in Vina 1.2.3's output layout (atoms trimmed to two per pose). */
const DOCKED_PDBQT = `MODEL 1
REMARK VINA RESULT:    -7.125      0.000      0.000
REMARK INTER + INTRA:          -8.912
REMARK INTER:                  -8.101
REMARK INTRA:                  -0.811
REMARK UNBOUND:                -0.640
REMARK  Name = aspirin
ROOT
ATOM      1  C   UNL     1       8.081  16.502  13.651  0.00  0.00    +0.000 A
ATOM      2  C   UNL     1       7.851  16.098  12.332  0.00  0.00    +0.000 A
ENDROOT
TORSDOF 4
ENDMDL
MODEL 2
REMARK VINA RESULT:    -6.480      2.116      3.354
REMARK  Name = aspirin
ROOT
ATOM      1  C   UNL     1       9.081  15.502  12.651  0.00  0.00    +0.000 A
ATOM      2  C   UNL     1       8.851  15.098  11.332  0.00  0.00    +0.000 A
ENDROOT
TORSDOF 4
ENDMDL
MODEL 3
REMARK VINA RESULT:    -5.302     10.802     12.364
REMARK  Name = aspirin
ROOT
ATOM      1  C   UNL     1      18.081  26.502  23.651  0.00  0.00    +0.000 A
ATOM      2  C   UNL     1      17.851  26.098  22.332  0.00  0.00    +0.000 A
ENDROOT
TORSDOF 4
ENDMDL
`;

describe("vina spec", () => {
  it("declares a CPU receptor model scored by affinity, lower is better, one ligand per process", () => {
    assert.equal(vinaSpec.name, "vina");
    assert.equal(vinaSpec.resources.accelerator, "cpu");
    assert.equal(vinaSpec.target, "receptor");
    assert.deepEqual(
      { name: vinaSpec.score.name, unit: vinaSpec.score.unit, better: vinaSpec.score.better },
      { name: "affinity_kcal_mol", unit: "kcal/mol", better: "lower" },
    );
    assert.deepEqual(vinaSpec.packing, { perProcess: 1, parallel: "cores" });
    assert.equal(vinaSpec.parameters.center_x?.default, undefined, "the box has no default");
    assert.equal(vinaSpec.parameters.exhaustiveness?.default, 8);
    assert.deepEqual(vinaSpec.parameters.scoring?.enum, ["vina", "vinardo"]);
  });
});

describe("parseVinaModes", () => {
  it("reads every MODEL's VINA RESULT line, best first as written", () => {
    assert.deepEqual(parseVinaModes(DOCKED_PDBQT), [
      { mode: 1, affinity_kcal_mol: -7.125, rmsd_lb: 0, rmsd_ub: 0 },
      { mode: 2, affinity_kcal_mol: -6.48, rmsd_lb: 2.116, rmsd_ub: 3.354 },
      { mode: 3, affinity_kcal_mol: -5.302, rmsd_lb: 10.802, rmsd_ub: 12.364 },
    ]);
  });

  it("accepts CRLF line ends and finds nothing in a file without results", () => {
    assert.equal(parseVinaModes(DOCKED_PDBQT.replaceAll("\n", "\r\n")).length, 3);
    assert.deepEqual(parseVinaModes(""), []);
    assert.deepEqual(parseVinaModes("REMARK  Name = x\nROOT\nENDROOT\nTORSDOF 0\n"), []);
  });
});

describe("cleanReceptorPdb", () => {
  it("keeps protein ATOM, TER and END; drops waters, HETATM, other alternate locations and models", () => {
    const pdb = [
      "HEADER    HYDROLASE",
      "MODEL        1",
      "ATOM      1  N   PRO A   1      13.120  39.003   5.159  1.00 55.41           N",
      "ATOM      2  CA APRO A   1      12.941  39.418   6.575  0.50 31.00           C",
      "ATOM      3  CA BPRO A   1      12.900  39.400   6.500  0.50 31.00           C",
      "ATOM      4  O   WAT A 300      10.000  10.000  10.000  1.00 20.00           O",
      "TER       5      PRO A   1",
      "HETATM    6  C1  478   200      11.169  14.977   2.445  1.00 29.50           C",
      "HETATM    7  O   HOH   301      11.000  15.000   2.000  1.00 29.50           O",
      "ENDMDL",
      "MODEL        2",
      "ATOM      1  N   PRO A   1      13.000  39.000   5.000  1.00 55.41           N",
      "ENDMDL",
      "END",
    ].join("\n");
    const cleaned = cleanReceptorPdb(pdb);
    assert.equal(cleaned.atoms, 2);
    assert.deepEqual(cleaned.text.trimEnd().split("\n"), [
      "ATOM      1  N   PRO A   1      13.120  39.003   5.159  1.00 55.41           N",
      "ATOM      2  CA APRO A   1      12.941  39.418   6.575  0.50 31.00           C",
      "TER       5      PRO A   1",
      "END",
    ]);
  });

  it("drops an ID and line number in columns 73–80 so openbabel reads the element from the atom name", () => {
    const cleaned = cleanReceptorPdb(
      "ATOM      1  N   PRO A   1      13.120  39.003   5.159  1.00 55.41      1HPV 186\n",
    );
    assert.equal(
      cleaned.text.split("\n")[0],
      "ATOM      1  N   PRO A   1      13.120  39.003   5.159  1.00 55.41      1HPV",
    );
  });
});

describe("VinaRunner without the tools", () => {
  const runner = new VinaRunner();

  it("checkInstalled names the Debian packages and override variables when nothing is on PATH", async () => {
    const message = await runner.checkInstalled({ PATH: "" });
    assert.ok(message);
    for (const expected of [
      "vina",
      "autodock-vina",
      "HANGAR_VINA_CMD",
      "obabel",
      "openbabel",
      "HANGAR_OBABEL_CMD",
    ]) {
      assert.ok(message.includes(expected), `"${expected}" in: ${message}`);
    }
  });

  it("checkInstalled rejects an override that is not an executable file", async () => {
    await withTempDir(async (dir) => {
      const notExecutable = path.join(dir, "vina");
      await writeFile(notExecutable, "#!/bin/sh\n");
      const message = await runner.checkInstalled({ PATH: "", HANGAR_VINA_CMD: notExecutable });
      assert.ok(message?.includes("HANGAR_VINA_CMD"), String(message));
    });
  });

  it("prepare fails the input, without a command, when the box is not set", async () => {
    await withTempDir(async (dir) => {
      const parameters: JsonObject = { center_x: 1, center_y: 2, center_z: 3, size_x: 20, size_y: 20 };
      const prepared = await runner.prepare([ASPIRIN], context(dir, { parameters, env: { PATH: "" } }));
      assert.equal(prepared.command, null);
      assert.equal(prepared.failed.length, 1);
      assert.equal(prepared.failed[0]?.status, "failed");
      assert.equal(prepared.failed[0]?.error?.code, "box_not_set");
      assert.match(prepared.failed[0]?.error?.message ?? "", /box_ligand/);
    });
  });

  it("parse reports a failed process with its exit code or signal and stderr", async () => {
    await withTempDir(async (dir) => {
      const workUnit = context(dir, { env: { PATH: "" } });
      const [failed] = await runner.parse([ASPIRIN], workUnit, exited(1, "PDBQT parsing error: ROOT"));
      assert.equal(failed?.status, "failed");
      assert.equal(failed?.error?.code, "vina_failed");
      assert.match(failed?.error?.message ?? "", /code 1.*PDBQT parsing error/);
      const [killed] = await runner.parse([ASPIRIN], workUnit, exited(null, "", "SIGKILL"));
      assert.match(killed?.error?.message ?? "", /SIGKILL/);
    });
  });

  it("parse fails an input whose output is missing even though vina exited 0", async () => {
    await withTempDir(async (dir) => {
      const [result] = await runner.parse([ASPIRIN], context(dir, { env: { PATH: "" } }), exited(0));
      assert.equal(result?.error?.code, "vina_failed");
      assert.match(result?.error?.message ?? "", /aspirin\.docked\.pdbqt/);
    });
  });

  it("parse scores the best pose, lists every mode, and keeps the PDBQT when no SDF can be made", async () => {
    await withTempDir(async (dir) => {
      await writeFile(path.join(dir, "aspirin.docked.pdbqt"), DOCKED_PDBQT);
      const env = { PATH: "", HANGAR_OBABEL_CMD: path.join(dir, "missing-obabel") };
      const [result] = await runner.parse([ASPIRIN], context(dir, { env }), exited(0));
      assert.ok(result);
      assert.equal(result.status, "succeeded");
      assert.equal(result.score, -7.125);
      assert.deepEqual(result.confidence, {});
      assert.equal((result.details.modes as JsonObject[]).length, 3);
      assert.deepEqual(result.structures, [
        { path: path.join(dir, "aspirin.docked.pdbqt"), format: "pdbqt", role: "pose" },
      ]);
      assert.match(String(result.details.pose_sdf_error), /openbabel/);
    });
  });
});

/** Centre and extent of the reference inhibitor (residue 478) from the PDB's fixed columns. */
function referenceLigandBox(pdb: string, padding: number): JsonObject {
  const atoms = pdb
    .split("\n")
    .filter((line) => line.startsWith("HETATM") && line.slice(17, 20).trim() === "478")
    .map((line) => [line.slice(30, 38), line.slice(38, 46), line.slice(46, 54)].map(Number));
  assert.ok(atoms.length > 0, "residue 478 found");
  const box: JsonObject = {};
  ["x", "y", "z"].forEach((axis, index) => {
    const values = atoms.map((atom) => atom[index] ?? Number.NaN);
    const centre = values.reduce((sum, value) => sum + value, 0) / values.length;
    box[`center_${axis}`] = Number(centre.toFixed(3));
    box[`size_${axis}`] = Number((Math.max(...values) - Math.min(...values) + 2 * padding).toFixed(3));
  });
  return box;
}

function runCommand(argv: string[], cwd: string): Promise<ProcessExit> {
  const [executable, ...args] = argv;
  assert.ok(executable);
  return new Promise((resolve) => {
    execFile(executable, args, { cwd, maxBuffer: 16 * 1024 * 1024 }, (error, _stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
      resolve({ code, signal: error?.signal ?? null, stderrTail: stderr.slice(-2000) });
    });
  });
}

describe("VinaRunner with the real vina and obabel", { skip: skipRealTools }, () => {
  const runner = new VinaRunner();

  it("is installed", async () => {
    assert.equal(await runner.checkInstalled(process.env), null);
  });

  it("docks aspirin into HIV-1 protease (1hpv) and reads back the poses", async (t) => {
    const started = performance.now();
    await withTempDir(async (dir) => {
      const receptorPath = path.join(dir, "1hpv.pdb");
      await copyFile(HIV_PROTEASE_PDB, receptorPath);
      const box = referenceLigandBox(await readFile(receptorPath, "utf8"), 8);
      const parameters: JsonObject = { ...box, exhaustiveness: 2, num_modes: 9, energy_range: 3, seed: 42 };
      const workUnit = context(dir, { receptorPath, parameters });

      await runner.prepareShared(workUnit);
      const receptor = await readFile(path.join(dir, "receptor.prepared.pdbqt"), "utf8");
      assert.doesNotMatch(receptor, /^.{17}(HOH|478)/m, "no waters or inhibitor left in the receptor");
      assert.match(receptor, / HD\s*$/m, "polar hydrogens added");

      const prepared = await runner.prepare([ASPIRIN], workUnit);
      assert.deepEqual(prepared.failed, []);
      assert.ok(prepared.command);
      const argv = prepared.command.argv;
      assert.deepEqual(argv.slice(argv.indexOf("--cpu"), argv.indexOf("--cpu") + 2), ["--cpu", "1"]);
      assert.deepEqual(prepared.command.inputIds, ["aspirin"]);

      const dockingStarted = performance.now();
      const exit = await runCommand(argv, prepared.command.cwd);
      t.diagnostic(`vina, exhaustiveness 2: ${((performance.now() - dockingStarted) / 1000).toFixed(1)} s`);
      assert.equal(exit.code, 0, exit.stderrTail);

      const [result] = await runner.parse([ASPIRIN], workUnit, exit);
      assert.ok(result);
      assert.equal(result.status, "succeeded", JSON.stringify(result.error));
      const score = result.score;
      assert.ok(typeof score === "number" && score < -3 && score > -12, `plausible affinity: ${score}`);
      const affinities = (result.details.modes as JsonObject[]).map(
        (mode) => mode.affinity_kcal_mol as number,
      );
      assert.ok(affinities.length >= 1);
      assert.equal(affinities[0], score);
      assert.deepEqual(
        affinities,
        [...affinities].sort((a, b) => a - b),
        "best first",
      );
      assert.match(String(result.details.vina_version), /^1\.2/);

      const sdf = result.structures.find((structure) => structure.format === "sdf");
      assert.ok(sdf, "best pose as SDF");
      assert.equal(sdf.role, "pose");
      const sdfText = await readFile(sdf.path, "utf8");
      assert.ok(sdfText.includes("M  END") || sdfText.includes("$$$$"));
      assert.ok(sdfText.startsWith("Aspirin\n"), "titled with the ligand's name");
      assert.ok(
        result.structures.some((structure) => structure.format === "pdbqt" && structure.role === "pose"),
      );
      const ligand = result.structures.find((structure) => structure.role === "ligand");
      assert.ok(ligand, "the docked input is kept");
      assert.match(await readFile(ligand.path, "utf8"), /^TORSDOF/m);
    });
    t.diagnostic(`whole test: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });

  it("fails a ligand that openbabel cannot read instead of throwing", async () => {
    await withTempDir(async (dir) => {
      const receptorPath = path.join(dir, "receptor.pdbqt");
      await writeFile(
        receptorPath,
        "ATOM      1  N   PRO A   1      13.120  39.003   5.159  0.00  0.00    +0.000 NA\n",
      );
      const parameters: JsonObject = {
        center_x: 0,
        center_y: 0,
        center_z: 0,
        size_x: 20,
        size_y: 20,
        size_z: 20,
      };
      const workUnit = context(dir, { receptorPath, parameters });
      await runner.prepareShared(workUnit);
      const notSmiles: PredictionInput = { id: "bad", name: "bad", smiles: "this is not smiles" };
      const prepared = await runner.prepare([notSmiles], workUnit);
      assert.equal(prepared.command, null);
      assert.equal(prepared.failed[0]?.error?.code, "ligand_preparation_failed");
      assert.match(prepared.failed[0]?.error?.message ?? "", /invalid|0 molecules/i);
    });
  });
});
