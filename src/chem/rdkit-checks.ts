import type { Mol, MolList } from "@rdkit/rdkit";
import {
  defaultName,
  type InvalidLigand,
  type LigandCheck,
  type LigandList,
  type LigandRow,
} from "./ligands.ts";
import type { Rdkit } from "./rdkit.ts";

/*
 * The checks that need RDKit. They run in the chemistry worker (chem-worker.ts), so the server's own
 * thread never loads RDKit's ~100 MB of WebAssembly nor waits on it.
 */

/** What `Mol.get_frags()` returns; the typings only say `any`. */
interface Fragments {
  molList: MolList;
}

/**
 * Sanitisation (valence, kekulisation) is the validation we want; removing explicit hydrogens is not
 * and costs about a quarter of the parse, and heavy-atom counts do not depend on it.
 */
const SMILES_PARSE_OPTIONS = JSON.stringify({ sanitize: true, removeHs: false });

const fail = (reason: string): LigandCheck => ({ ok: false, reason });

/**
 * Parses and sanitises one SMILES with RDKit; salts and mixtures keep their largest fragment.
 * A one-fragment SMILES is kept as given: canonicalising it would add about 70% to the check and
 * buy nothing downstream (the input is what the user recognises, and every model reads any valid SMILES).
 */
export function checkLigand(rdkit: Rdkit, smiles: string): LigandCheck {
  const input = smiles.trim();
  if (input === "") return fail("empty SMILES");
  // RDKit would read "CCO ethanol" as a SMILES with a name, so the whole string would not be a SMILES.
  if (/\s/.test(input)) return fail("not a valid SMILES: it contains whitespace (give the name separately)");
  if (input.includes("*"))
    return fail("not a valid SMILES: it has a wildcard atom (*), which cannot be modelled");
  rdkit.errorLog?.clear_buffer();
  const mol = rdkit.module.get_mol(input, SMILES_PARSE_OPTIONS);
  if (mol === null) return fail(`not a valid SMILES: ${rdkitComplaint(rdkit)}`);
  try {
    if (input.includes(".")) return largestFragment(mol, smiles);
    const heavyAtoms = mol.get_num_atoms(true);
    if (heavyAtoms === 0) return fail("no heavy atoms");
    return { ok: true, smiles: input, heavyAtoms, fragmentsDropped: 0, inputSmiles: smiles };
  } finally {
    mol.delete();
  }
}

/** Keeps the fragment with the most heavy atoms (the first of equals), as canonical SMILES. */
function largestFragment(mol: Mol, inputSmiles: string): LigandCheck {
  const fragments: Fragments = mol.get_frags();
  const list = fragments.molList;
  try {
    const count = list.size();
    let smiles = "";
    let heavyAtoms = 0;
    for (let i = 0; i < count; i++) {
      const fragment = list.at(i);
      if (fragment === null) continue;
      try {
        const fragmentHeavyAtoms = fragment.get_num_atoms(true);
        if (fragmentHeavyAtoms > heavyAtoms) {
          heavyAtoms = fragmentHeavyAtoms;
          smiles = fragment.get_smiles();
        }
      } finally {
        fragment.delete();
      }
    }
    if (heavyAtoms === 0) return fail("no heavy atoms");
    return { ok: true, smiles, heavyAtoms, fragmentsDropped: count - 1, inputSmiles };
  } finally {
    list.delete();
  }
}

/** RDKit's own words for why it rejected the last input, without its timestamps and echo of the input. */
function rdkitComplaint(rdkit: Rdkit): string {
  const lines = (rdkit.errorLog?.get_buffer() ?? "")
    .split("\n")
    .map((line) => line.replace(/^\[[\d:]+\]\s*/, "").trim())
    .filter((line) => line !== "");
  for (const line of lines) {
    const position = /check for mistakes around position (\d+)/.exec(line);
    if (position) return `syntax error at position ${position[1]}`;
  }
  // Failed invariants come framed in asterisks: a kind ("Range Error"), then the check that failed.
  if (lines.some((line) => /^\*+$/.test(line))) {
    const [kind, check] = lines.filter((line) => !/^\*+$/.test(line));
    if (kind !== undefined) return check === undefined ? kind : `${kind}: ${check}`;
  }
  const first = lines[0];
  if (first === undefined) return "RDKit could not read it";
  return first
    .replace(/^SMILES Parse Error:\s*/, "")
    .replace(/ for input: '.*'$/, "")
    .replace(/\s+/g, " ");
}

/** Records end at `$$$$`; the name is the molblock's first line; RDKit turns each molblock into SMILES. */
export function parseSdfLigands(rdkit: Rdkit, text: string): LigandList {
  const entries: LigandRow[] = [];
  const errors: InvalidLigand[] = [];
  const records = text.split(/^\$\$\$\$[ \t]*\r?$\n?/m);
  if (records.at(-1)?.trim() === "") records.pop();
  records.forEach((record, index) => {
    const name = record.split(/\r?\n/, 1)[0]?.trim() || defaultName(index);
    const end = /^M {2}END[ \t]*\r?$/m.exec(record);
    if (end === null) {
      errors.push({ index, name, reason: 'not a molfile record (no "M  END" line)' });
      return;
    }
    rdkit.errorLog?.clear_buffer();
    const mol = rdkit.module.get_mol(record.slice(0, end.index + end[0].length));
    if (mol === null) {
      errors.push({ index, name, reason: `RDKit cannot read this record: ${rdkitComplaint(rdkit)}` });
      return;
    }
    try {
      if (mol.get_num_atoms() === 0) errors.push({ index, name, reason: "the record has no atoms" });
      else entries.push({ index, name, smiles: mol.get_smiles() });
    } finally {
      mol.delete();
    }
  });
  return { entries, errors };
}
