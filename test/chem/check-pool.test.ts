import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateLigandsInParallel } from "../../src/chem/check-pool.ts";
import { validateLigands } from "../../src/chem/ligands.ts";
import { loadRdkit } from "../../src/chem/rdkit.ts";

describe("validating big ligand lists in worker threads", () => {
  it("gives exactly the verdicts of the in-thread check, invalid rows and renames included", async () => {
    // 3,000 distinct ethers and alcohols (enough to use the workers), plus bad rows and a salt.
    const ligands = Array.from({ length: 3_000 }, (_, i) => ({
      name: i % 1000 === 7 ? "dup" : `l${i}`,
      smiles: `${"C".repeat(1 + (i % 60))}O${"C".repeat(Math.floor(i / 60))}`,
    }));
    ligands.push({ name: "broken", smiles: "C1CC(" }, { name: "salt", smiles: "CC(=O)[O-].[Na+]" });
    const options = { maxLigands: 10_000, maxHeavyAtoms: 200 };
    const parallel = await validateLigandsInParallel(ligands, options);
    const inline = validateLigands(await loadRdkit(), ligands, options);
    assert.deepEqual(parallel, inline);
    assert.equal(parallel.valid.length, ligands.length - 1);
    assert.deepEqual(
      parallel.invalid.map((row) => row.name),
      ["broken"],
    );
    assert.equal(parallel.valid.find((l) => l.name === "salt")?.fragmentsDropped, 1);
    assert.equal(parallel.renamed.length, 2, "the two later 'dup' rows were renamed");
  });

  it("refuses more ligands than the limit before checking any", async () => {
    await assert.rejects(validateLigandsInParallel([{ smiles: "C" }, { smiles: "CC" }], { maxLigands: 1 }), {
      code: "too_many_ligands",
    });
  });
});
