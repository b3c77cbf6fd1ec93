import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { boxFromLigand, parseReceptor, receptorFileFormat } from "../../src/chem/receptor.ts";
import { HangarError } from "../../src/domain/errors.ts";

/** HIV-1 protease with the inhibitor VX-478 (residue name 478) and 80 waters, from Debian's pymol-data. */
const HPV_PATH = "/usr/share/pymol/data/tut/1hpv.pdb";
const hpvMissing = existsSync(HPV_PATH) ? false : `${HPV_PATH} is missing (apt-get install pymol-data)`;

const hangarError = (code: string, message?: RegExp) => (error: unknown) =>
  error instanceof HangarError &&
  error.code === code &&
  (message === undefined || message.test(error.message));

/** A PDB ATOM/HETATM line written column by column, independently of the code under test. */
function atomLine(
  record: "ATOM" | "HETATM",
  serial: number,
  name: string,
  residue: string,
  chain: string,
  residueNumber: number,
  [x, y, z]: [number, number, number],
  altLoc = " ",
): string {
  const xyz = [x, y, z].map((value) => value.toFixed(3).padStart(8)).join("");
  return `${record.padEnd(6)}${String(serial).padStart(5)} ${name.padEnd(4)}${altLoc}${residue.padStart(3)} ${chain}${String(residueNumber).padStart(4)}    ${xyz}`;
}

describe("parseReceptor on 1hpv.pdb", { skip: hpvMissing }, () => {
  const text = hpvMissing ? "" : readFileSync(HPV_PATH, "utf8");

  it("counts protein atoms, waters and HETATM residues", () => {
    const receptor = parseReceptor("1hpv.pdb", text);
    assert.equal(receptor.format, "pdb");
    assert.equal(receptor.proteinAtoms, 1516);
    assert.equal(receptor.waterAtoms, 80);
    assert.deepEqual(receptor.heteroResidues, [{ name: "478", atoms: 35, copies: 1 }]);
    assert.equal(receptor.atoms.count, 1516 + 80 + 35);
    // Columns 73-80 of this old file hold "1HPV 186": elements must come from the atom names.
    assert.deepEqual([...new Set(receptor.atoms.elements)].sort(), ["C", "N", "O", "S"]);
  });

  it("centres the box on the inhibitor's centroid and pads its extent", () => {
    // Whitespace-split fields of the inhibitor's HETATM lines: ... 478, 200, x, y, z (no chain id).
    const inhibitor = text
      .split("\n")
      .filter((line) => line.startsWith("HETATM") && line.split(/\s+/)[3] === "478")
      .map((line) => line.split(/\s+/).slice(5, 8).map(Number));
    assert.equal(inhibitor.length, 35);
    const axis = (k: number) => inhibitor.map((xyz) => xyz[k]!);
    const centroid = [0, 1, 2].map((k) => axis(k).reduce((a, b) => a + b, 0) / inhibitor.length);
    const extent = [0, 1, 2].map((k) => Math.max(...axis(k)) - Math.min(...axis(k)));

    const receptor = parseReceptor("1hpv.pdb", text);
    const box = boxFromLigand(receptor, "478");
    box.center.forEach((value, k) => {
      assert.ok(Math.abs(value - centroid[k]!) <= 0.0005, `centre ${k}: ${value} vs ${centroid[k]}`);
    });
    // Worked out by hand from the file: (9.920, 16.231, 8.825).
    assert.deepEqual(box.center, [9.92, 16.231, 8.825]);
    box.size.forEach((side, k) => {
      const wanted = extent[k]! + 16;
      assert.ok(side >= wanted && side < wanted + 0.1 + 1e-9, `side ${k}: ${side} for extent ${extent[k]}`);
      assert.equal(Math.round(side * 10), side * 10, "a whole number of tenths");
    });

    const tight = boxFromLigand(receptor, "478", 0);
    assert.ok(
      tight.size.every((side) => side >= 10),
      "at least 10 Å a side",
    );
  });

  it("names the HETATM residues that exist when asked for one that does not", () => {
    const receptor = parseReceptor("1hpv.pdb", text);
    assert.throws(
      () => boxFromLigand(receptor, "ATP"),
      (error: unknown) =>
        hangarError("box_ligand_not_found", /478/)(error) &&
        JSON.stringify((error as HangarError).details) ===
          JSON.stringify({ box_ligand: "ATP", available: ["478"] }),
    );
    assert.throws(() => boxFromLigand(receptor, "HOH"), hangarError("box_ligand_not_found"));
  });

  it("tells receptor formats by file name", () => {
    assert.equal(receptorFileFormat("1hpv.pdb"), "pdb");
    assert.equal(receptorFileFormat("/data/1HPV.ENT"), "pdb");
    assert.equal(receptorFileFormat("sub/protein.pdbqt"), "pdbqt");
    assert.equal(receptorFileFormat("protein.cif"), null);
    assert.equal(receptorFileFormat("pdb"), null);
  });
});

describe("parseReceptor", () => {
  const protein = [
    atomLine("ATOM", 1, " N", "GLY", "A", 1, [1, 2, 3]),
    atomLine("ATOM", 2, " CA", "GLY", "A", 1, [2, 2, 3]),
  ];

  it("refuses text without ATOM records", () => {
    assert.throws(
      () => parseReceptor("receptor.pdb", "this is not a protein\nat all\n"),
      hangarError("invalid_receptor", /no ATOM records/),
    );
    assert.throws(
      () => parseReceptor("receptor.pdb", `${atomLine("HETATM", 1, " C1", "LIG", "A", 1, [0, 0, 0])}\n`),
      hangarError("invalid_receptor", /no ATOM records/),
    );
  });

  it("says which line has coordinates that are not numbers", () => {
    const bad = `${protein[0]}\n${protein[1]!.slice(0, 30)}  12.abc   2.000   3.000\n`;
    assert.throws(
      () => parseReceptor("receptor.pdb", bad),
      hangarError("invalid_receptor", /line 2: x, y, z/),
    );
    const blank = `${protein[0]}\n${protein[1]!.slice(0, 30)}${" ".repeat(8)}   2.000   3.000\n`;
    const infinite = `${protein[0]}\n${protein[1]!.slice(0, 30)}Infinity   2.000   3.000\n`;
    assert.throws(() => parseReceptor("receptor.pdb", infinite), hangarError("invalid_receptor", /line 2/));
    assert.throws(() => parseReceptor("receptor.pdb", blank), hangarError("invalid_receptor", /line 2/));
    assert.throws(
      () => parseReceptor("receptor.pdb", `${protein[0]}\nATOM      2  CA  GLY A   1\n`),
      hangarError("invalid_receptor", /line 2: the record ends before x, y, z/),
    );
  });

  it("accepts only .pdb, .pdbqt and .ent files", () => {
    assert.throws(
      () => parseReceptor("receptor.cif", protein.join("\n")),
      hangarError("invalid_receptor", /\.pdb/),
    );
    assert.equal(parseReceptor("PDB1ABC.ENT", protein.join("\n")).proteinAtoms, 2);
  });

  it("reads PDBQT, taking elements from AutoDock atom types", () => {
    const pdbqt = [
      `${atomLine("ATOM", 1, " N", "MET", "B", 225, [8.895, 115.777, 72.069])}  1.00 66.21    -0.058 N `,
      `${atomLine("ATOM", 2, " HN1", "MET", "B", 225, [9.11, 116.757, 71.885])}  1.00  0.00     0.276 HD`,
      `${atomLine("ATOM", 3, " OD1", "ASP", "B", 226, [9.5, 116, 71])}  1.00  0.00    -0.648 OA`,
      `${atomLine("ATOM", 4, " CG", "PHE", "B", 227, [9.5, 116, 71])}  1.00  0.00     0.000 A `,
    ].join("\n");
    const receptor = parseReceptor("protein.pdbqt", pdbqt);
    assert.equal(receptor.format, "pdbqt");
    assert.deepEqual(receptor.atoms.elements, ["N", "H", "O", "C"]);
  });

  it("keeps one alternate conformation and only the first model", () => {
    const text = [
      "MODEL        1",
      protein[0],
      atomLine("ATOM", 2, " CA", "SER", "A", 2, [5, 5, 5], "A"),
      atomLine("ATOM", 3, " CA", "SER", "A", 2, [6, 6, 6], "B"),
      atomLine("HETATM", 4, " C1", "LIG", "A", 9, [1, 1, 1]),
      atomLine("HETATM", 5, " C2", "LIG", "A", 9, [3, 5, 1]),
      atomLine("HETATM", 6, " C1", "LIG", "B", 9, [50, 50, 50]),
      "ENDMDL",
      "MODEL        2",
      protein[0],
      "ENDMDL",
    ].join("\n");
    const receptor = parseReceptor("ensemble.pdb", text);
    assert.equal(receptor.proteinAtoms, 2);
    assert.deepEqual(receptor.heteroResidues, [{ name: "LIG", atoms: 3, copies: 2 }]);
    assert.deepEqual(Array.from(receptor.atoms.coordinates.slice(3, 6)), [5, 5, 5]);
    // The first copy only, padded by 8 Å on each side: 2 + 16 → 18, 4 + 16 → 20, 0 + 16 → 16.
    assert.deepEqual(boxFromLigand(receptor, "lig"), { center: [2, 3, 1], size: [18, 20, 16] });
    assert.throws(() => boxFromLigand(receptor, "LIG", -1), hangarError("invalid_box_padding"));
  });
});
