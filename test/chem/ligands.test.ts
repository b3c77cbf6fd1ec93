import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { WorkerChemistry } from "../../src/chem/chemistry.ts";
import {
  checkLigandRange,
  type LigandInput,
  nameLigands,
  parseLigandList,
  uniqueNames,
  validateLigands,
} from "../../src/chem/ligands.ts";
import { loadRdkit, type Rdkit } from "../../src/chem/rdkit.ts";
import { checkLigand } from "../../src/chem/rdkit-checks.ts";
import { HangarError } from "../../src/domain/errors.ts";

const ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O";

let rdkit: Rdkit;
const chemistry = new WorkerChemistry({ idleMs: 60_000 });
before(async () => {
  rdkit = await loadRdkit();
});
after(() => chemistry.close());

function rejected(smiles: string): string {
  const check = checkLigand(rdkit, smiles);
  assert.equal(check.ok, false, `${JSON.stringify(smiles)} should be rejected`);
  return check.ok ? "" : check.reason;
}

const hangarError = (code: string) => (error: unknown) => error instanceof HangarError && error.code === code;

describe("loadRdkit", () => {
  it("loads the WebAssembly module once", async () => {
    assert.equal(await loadRdkit(), rdkit);
    assert.match(rdkit.module.version(), /^\d{4}\.\d{2}\./);
  });
});

describe("checkLigand", () => {
  it("accepts a valid SMILES as given, with its heavy-atom count", () => {
    assert.deepEqual(checkLigand(rdkit, ` ${ASPIRIN} `), {
      ok: true,
      smiles: ASPIRIN,
      heavyAtoms: 13,
      fragmentsDropped: 0,
      inputSmiles: ` ${ASPIRIN} `,
    });
  });

  it("rejects what RDKit cannot read, in RDKit's words", () => {
    assert.equal(rejected(""), "empty SMILES");
    assert.equal(rejected("   "), "empty SMILES");
    assert.equal(rejected("C1CC"), "not a valid SMILES: unclosed ring");
    assert.equal(rejected("Xx"), "not a valid SMILES: syntax error at position 1");
    assert.equal(rejected("c1ccccc1("), "not a valid SMILES: syntax error at position 9");
    assert.match(rejected("c1cccc1"), /^not a valid SMILES: Can't kekulize mol/);
    assert.match(rejected("C(C)(C)(C)(C)C"), /^not a valid SMILES: Explicit valence for atom # 0 C, 5/);
  });

  it("rejects names inside the SMILES, wildcard atoms and hydrogen alone", () => {
    assert.match(rejected("CCO ethanol"), /whitespace/);
    assert.match(rejected("*CC"), /wildcard/);
    assert.equal(rejected("[H][H]"), "no heavy atoms");
  });

  it("keeps the largest fragment of a salt and says how many it dropped", () => {
    assert.deepEqual(checkLigand(rdkit, "CC(=O)[O-].[Na+]"), {
      ok: true,
      smiles: "CC(=O)[O-]",
      heavyAtoms: 4,
      fragmentsDropped: 1,
      inputSmiles: "CC(=O)[O-].[Na+]",
    });
    const hydrochloride = checkLigand(rdkit, "c1ccccc1C(=O)O.Cl");
    assert.ok(hydrochloride.ok);
    assert.equal(hydrochloride.smiles, "O=C(O)c1ccccc1");
    assert.equal(hydrochloride.heavyAtoms, 9);
    assert.equal(hydrochloride.fragmentsDropped, 1);
  });

  it("keeps the first of equally large fragments", () => {
    const check = checkLigand(rdkit, "[Na+].[Cl-].O");
    assert.ok(check.ok);
    assert.equal(check.smiles, "[Na+]");
    assert.equal(check.fragmentsDropped, 2);
  });
});

describe("parseLigandList", () => {
  it("reads CSV with quoted fields, doubled quotes, CRLF and a byte-order mark", async () => {
    const csv =
      '\uFEFFid,Name,SMILES\r\n1,"aspirin, acetylsalicylic acid",CC(=O)Oc1ccccc1C(=O)O\r\n' +
      '2,"the ""quoted"" one",CCO\r\n3,,c1ccccc1\r\n\r\n4,"two\r\nlines",C1CC\r\n';
    assert.deepEqual(await parseLigandList(chemistry, "library.CSV", csv), {
      entries: [
        { index: 0, name: "aspirin, acetylsalicylic acid", smiles: ASPIRIN },
        { index: 1, name: 'the "quoted" one', smiles: "CCO" },
        { index: 2, name: "ligand_3", smiles: "c1ccccc1" },
        { index: 3, name: "two\r\nlines", smiles: "C1CC" },
      ],
      errors: [],
    });
  });

  it("reads CSV without a name column or a final line break", async () => {
    assert.deepEqual((await parseLigandList(chemistry, "l.csv", "smiles\nCCO\nCCN")).entries, [
      { index: 0, name: "ligand_1", smiles: "CCO" },
      { index: 1, name: "ligand_2", smiles: "CCN" },
    ]);
  });

  it("refuses CSV without a smiles column, or with a quote never closed", async () => {
    await assert.rejects(
      parseLigandList(chemistry, "l.csv", "name,structure\naspirin,CCO\n"),
      (error: unknown) =>
        hangarError("invalid_ligand_file")(error) &&
        /"smiles" column \(found: name, structure\)/.test(String(error)),
    );
    await assert.rejects(
      parseLigandList(chemistry, "l.csv", 'name,smiles\na,CCO\n"b,CCN\n'),
      (error: unknown) => hangarError("invalid_ligand_file")(error) && /starts on line 3/.test(String(error)),
    );
  });

  it("reads SMILES files: SMILES, whitespace, optional name; skips comments and blank lines", async () => {
    const smi = "SMILES Name\n# from the bench\nCCO ethanol\n\n  c1ccccc1\tbenzene ring  \r\nC1CC\n";
    assert.deepEqual(await parseLigandList(chemistry, "set.smi", smi), {
      entries: [
        { index: 0, name: "ethanol", smiles: "CCO" },
        { index: 1, name: "benzene ring", smiles: "c1ccccc1" },
        { index: 2, name: "ligand_3", smiles: "C1CC" },
      ],
      errors: [],
    });
    assert.equal((await parseLigandList(chemistry, "set.smiles", "CCO")).entries.length, 1);
  });

  it("reads SDF records through RDKit; a record it cannot read becomes an error row", async () => {
    const molblock = (smiles: string, name: string) => {
      const mol = rdkit.module.get_mol(smiles)!;
      try {
        const block = mol.get_molblock();
        return name + block.slice(block.indexOf("\n"));
      } finally {
        mol.delete();
      }
    };
    const ethanol = molblock("CCO", "ethanol");
    const brokenBond = ethanol.replace("  2  3  1  0", "  2  9  1  0");
    assert.notEqual(brokenBond, ethanol);
    const sdf = [
      `${molblock(ASPIRIN, "aspirin")}> <id>\n1\n\n`,
      `${brokenBond}`,
      `${molblock("CC(=O)[O-].[Na+]", "")}`,
      "no molblock here\n",
    ]
      .map((record) => `${record}$$$$\n`)
      .join("");
    const list = await parseLigandList(chemistry, "hits.sdf", sdf);
    assert.deepEqual(list.entries, [
      { index: 0, name: "aspirin", smiles: ASPIRIN },
      { index: 2, name: "ligand_3", smiles: "CC(=O)[O-].[Na+]" },
    ]);
    assert.equal(list.errors.length, 2);
    assert.equal(list.errors[0]?.index, 1);
    assert.equal(list.errors[0]?.name, "ethanol");
    assert.match(list.errors[0]?.reason ?? "", /^RDKit cannot read this record: Range Error/);
    assert.deepEqual(list.errors[1], {
      index: 3,
      name: "no molblock here",
      reason: 'not a molfile record (no "M  END" line)',
    });
  });

  it("refuses other file types", async () => {
    await assert.rejects(
      parseLigandList(chemistry, "ligands.xlsx", ""),
      hangarError("unsupported_ligand_file"),
    );
  });
});

describe("uniqueNames", () => {
  it("suffixes repeats with -2, -3, … skipping suffixes already taken", () => {
    assert.deepEqual(uniqueNames(["a", "b", "a", "a-2", "a", "b"]), {
      names: ["a", "b", "a-3", "a-2", "a-4", "b-2"],
      renamed: [
        { index: 2, from: "a", to: "a-3" },
        { index: 4, from: "a", to: "a-4" },
        { index: 5, from: "b", to: "b-2" },
      ],
    });
  });
});

describe("validateLigands", () => {
  it("sorts ligands into valid and invalid, naming and de-duplicating them", async () => {
    const result = await validateLigands(
      chemistry,
      [
        { name: "aspirin", smiles: ASPIRIN },
        { smiles: "C1CC" },
        { name: "aspirin", smiles: "CC(=O)[O-].[Na+]" },
        { name: "big", smiles: "C".repeat(30) },
        { name: " ", smiles: ASPIRIN },
      ],
      { maxLigands: 5, maxHeavyAtoms: 20 },
    );
    assert.deepEqual(result.valid, [
      {
        index: 0,
        name: "aspirin",
        smiles: ASPIRIN,
        inputSmiles: ASPIRIN,
        heavyAtoms: 13,
        fragmentsDropped: 0,
      },
      {
        index: 2,
        name: "aspirin-2",
        smiles: "CC(=O)[O-]",
        inputSmiles: "CC(=O)[O-].[Na+]",
        heavyAtoms: 4,
        fragmentsDropped: 1,
      },
      {
        index: 4,
        name: "ligand_5",
        smiles: ASPIRIN,
        inputSmiles: ASPIRIN,
        heavyAtoms: 13,
        fragmentsDropped: 0,
      },
    ]);
    assert.deepEqual(result.invalid, [
      { index: 1, name: "ligand_2", reason: "not a valid SMILES: unclosed ring", smiles: "C1CC" },
      {
        index: 3,
        name: "big",
        reason: "30 heavy atoms; this model takes at most 20",
        smiles: "C".repeat(30),
      },
    ]);
    assert.deepEqual(result.renamed, [{ index: 2, from: "aspirin", to: "aspirin-2" }]);
  });

  it("reports the file's own row numbers when the rows carry them", async () => {
    const result = await validateLigands(
      chemistry,
      [
        { index: 3, name: "x", smiles: "CCO" },
        { index: 7, name: "x", smiles: "Xx" },
      ],
      { maxLigands: 10 },
    );
    assert.equal(result.valid[0]?.index, 3);
    assert.equal(result.invalid[0]?.index, 7);
    assert.deepEqual(result.renamed, [{ index: 7, from: "x", to: "x-2" }]);
  });

  it("refuses more ligands than allowed", async () => {
    await assert.rejects(
      validateLigands(chemistry, [{ smiles: "C" }, { smiles: "CC" }, { smiles: "CCC" }], { maxLigands: 2 }),
      (error: unknown) => hangarError("too_many_ligands")(error) && (error as HangarError).details?.max === 2,
    );
  });
});

describe("checkLigandRange", () => {
  it("checks a big list range by range with the one-shot check's verdicts, names and unreadable rows", async () => {
    // 3,000 distinct ethers and alcohols, bad rows, a salt and repeats.
    const ligands: LigandInput[] = Array.from({ length: 3_000 }, (_, i) => ({
      name: i % 1000 === 7 ? "dup" : `l${i}`,
      smiles: `${"C".repeat(1 + (i % 60))}O${"C".repeat(Math.floor(i / 60))}`,
    }));
    ligands.push(
      { name: "broken", smiles: "C1CC(" },
      { name: "salt", smiles: "CC(=O)[O-].[Na+]" },
      { name: "sd record", smiles: "", unreadable: "RDKit cannot read this record" },
    );
    const options = { maxHeavyAtoms: 200 };
    const oneShot = await validateLigands(chemistry, ligands, { maxLigands: 10_000, ...options });
    const naming = nameLigands(ligands);
    const ranged = { valid: [] as typeof oneShot.valid, invalid: [] as typeof oneShot.invalid };
    let turns = 0;
    const ticking = setInterval(() => turns++, 0);
    try {
      for (let from = 0; from < ligands.length; from += 700) {
        const range = { from, to: Math.min(ligands.length, from + 700) };
        const part = await checkLigandRange(chemistry, ligands, naming, range, options);
        ranged.valid.push(...part.valid);
        ranged.invalid.push(...part.invalid);
      }
    } finally {
      clearInterval(ticking);
    }
    assert.deepEqual({ ...ranged, renamed: naming.renamed }, oneShot);
    assert.deepEqual(
      oneShot.invalid.map((row) => [row.name, row.reason]),
      [
        ["broken", oneShot.invalid[0]?.reason],
        ["sd record", "RDKit cannot read this record"],
      ],
    );
    assert.match(oneShot.invalid[0]!.reason, /not a valid SMILES/);
    assert.equal(oneShot.valid.find((l) => l.name === "salt")?.fragmentsDropped, 1);
    assert.equal(oneShot.renamed.length, 2, "the two later 'dup' rows were renamed");
    assert.ok(turns > 0, "timers ran while the list was checked");
  });
});

describe("WorkerChemistry", () => {
  it("checks in a worker thread that ends when idle and starts again when needed", async () => {
    const brief = new WorkerChemistry({ idleMs: 50 });
    try {
      assert.equal(brief.running, false, "RDKit is not loaded before it is needed");
      const [good, bad] = await brief.checkSmiles([ASPIRIN, "C1CC"]);
      assert.deepEqual(good, checkLigand(rdkit, ASPIRIN));
      assert.deepEqual(bad, { ok: false, reason: "not a valid SMILES: unclosed ring" });
      assert.equal(brief.running, true);
      await sleep(400);
      assert.equal(brief.running, false, "the idle worker ended, returning RDKit's memory");
      assert.deepEqual(await brief.checkSmiles(["CCO"]), [checkLigand(rdkit, "CCO")]);
      assert.deepEqual(await brief.checkSmiles([]), []);
    } finally {
      await brief.close();
    }
    assert.equal(brief.running, false);
  });

  it("fails the checks in flight when its thread ends, and starts a new one for the next", async () => {
    const stopping = new WorkerChemistry({ idleMs: 60_000 });
    try {
      const inFlight = stopping.checkSmiles(
        Array.from({ length: 2_000 }, (_, i) => `${"C".repeat(i % 40)}O`),
      );
      await stopping.close();
      await assert.rejects(inFlight, /the chemistry worker stopped/);
      assert.equal(stopping.running, false);
      assert.deepEqual(await stopping.checkSmiles([ASPIRIN]), [checkLigand(rdkit, ASPIRIN)]);
    } finally {
      await stopping.close();
    }
  });

  it("answers requests made at once, each with its own result", async () => {
    const lists = [["CCO", "CCN"], ["c1ccccc1"], ["Xx", "CC(=O)[O-].[Na+]", "C"]];
    const answers = await Promise.all(lists.map((smiles) => chemistry.checkSmiles(smiles)));
    assert.deepEqual(
      answers,
      lists.map((smiles) => smiles.map((one) => checkLigand(rdkit, one))),
    );
  });
});
