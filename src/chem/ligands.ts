import { setImmediate } from "node:timers/promises";
import type { Mol, MolList } from "@rdkit/rdkit";
import { unprocessable } from "../domain/errors.ts";
import type { Rdkit } from "./rdkit.ts";

export type LigandCheck =
  | {
      ok: true;
      /** What to run: the input when it is one fragment, else the largest fragment as canonical SMILES. */
      smiles: string;
      heavyAtoms: number;
      fragmentsDropped: number;
      inputSmiles: string;
    }
  | { ok: false; reason: string };

/** One row of a ligand file, numbered by its position among the file's rows (0-based). */
export interface LigandRow {
  index: number;
  name: string;
  smiles: string;
}

export interface InvalidLigand {
  index: number;
  name: string;
  reason: string;
  /** The SMILES as given, when there was one. */
  smiles?: string;
}

export interface LigandList {
  entries: LigandRow[];
  errors: InvalidLigand[];
}

export interface LigandEntry {
  index: number;
  name: string;
  smiles: string;
  inputSmiles: string;
  heavyAtoms: number;
  fragmentsDropped: number;
}

export interface Renamed {
  index: number;
  from: string;
  to: string;
}

export interface LigandInput {
  name?: string | undefined;
  smiles: string;
  /** Position in the source file; defaults to the position in the list. */
  index?: number | undefined;
  /** Why the row could not be read from its file (an SD record RDKit cannot read): invalid as is. */
  unreadable?: string | undefined;
}

export interface LigandValidation {
  valid: LigandEntry[];
  invalid: InvalidLigand[];
  renamed: Renamed[];
}

/** What `Mol.get_frags()` returns; the typings only say `any`. */
interface Fragments {
  molList: MolList;
}

/**
 * Sanitisation (valence, kekulisation) is the validation we want; removing explicit hydrogens is not
 * and costs about a quarter of the parse, and heavy-atom counts do not depend on it.
 */
const SMILES_PARSE_OPTIONS = JSON.stringify({ sanitize: true, removeHs: false });

const LIGAND_FILE_EXTENSIONS = [".csv", ".smi", ".smiles", ".sdf"] as const;

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

/** Whether reading this list needs RDKit (only SD files: their molblocks become SMILES). */
export const listNeedsRdkit = (fileName: string) => fileName.toLowerCase().endsWith(".sdf");

/**
 * Reads a ligand list: `.csv` (with a `smiles` column), `.smi`/`.smiles`, or `.sdf`. `rdkit` may be
 * null when `listNeedsRdkit` says so: loading it costs ~100 MB, which a CSV does not need.
 */
export function parseLigandList(rdkit: Rdkit | null, fileName: string, content: string): LigandList {
  const text = content.startsWith("\uFEFF") ? content.slice(1) : content;
  const extension = /\.[^./\\]+$/.exec(fileName.toLowerCase())?.[0] ?? "";
  switch (extension) {
    case ".csv":
      return { entries: parseCsvLigands(fileName, text), errors: [] };
    case ".smi":
    case ".smiles":
      return { entries: parseSmiLigands(text), errors: [] };
    case ".sdf":
      if (!rdkit) throw new Error("parseLigandList needs RDKit for an SD file (see listNeedsRdkit)");
      return parseSdfLigands(rdkit, text);
    default:
      throw unprocessable(
        "unsupported_ligand_file",
        `${fileName}: ligand files must be ${LIGAND_FILE_EXTENSIONS.join(", ")}`,
        { file: fileName, supported: [...LIGAND_FILE_EXTENSIONS] },
      );
  }
}

const defaultName = (index: number) => `ligand_${index + 1}`;

function parseCsvLigands(fileName: string, text: string): LigandRow[] {
  const records = parseCsv(fileName, text).filter((record) => record.some((cell) => cell.trim() !== ""));
  const header = (records[0] ?? []).map((cell) => cell.trim().toLowerCase());
  const smilesColumn = header.indexOf("smiles");
  if (smilesColumn < 0) {
    throw unprocessable(
      "invalid_ligand_file",
      `${fileName}: the header row must name a "smiles" column (found: ${header.join(", ") || "nothing"})`,
      { file: fileName, columns: header },
    );
  }
  const nameColumn = header.indexOf("name");
  return records.slice(1).map((record, index) => ({
    index,
    name: (nameColumn >= 0 ? record[nameColumn]?.trim() : undefined) || defaultName(index),
    smiles: record[smilesColumn]?.trim() ?? "",
  }));
}

/** RFC 4180: quoted fields may hold commas, line breaks and doubled quotes; CRLF or LF ends a record. */
function parseCsv(fileName: string, text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let position = 0;
  let line = 1;
  while (position <= text.length) {
    let field: string;
    if (text[position] === '"') {
      const startLine = line;
      field = "";
      position++;
      for (;;) {
        const quote = text.indexOf('"', position);
        if (quote < 0) {
          throw unprocessable(
            "invalid_ligand_file",
            `${fileName}: the quoted field that starts on line ${startLine} is never closed`,
            { file: fileName, line: startLine },
          );
        }
        const chunk = text.slice(position, quote);
        line += countLineBreaks(chunk);
        field += chunk;
        position = quote + 1;
        if (text[position] !== '"') break;
        field += '"';
        position++;
      }
      // Lenient about text between the closing quote and the separator, as spreadsheets are.
      const rest = /[^,\r\n]*/y;
      rest.lastIndex = position;
      field += rest.exec(text)?.[0] ?? "";
      position = rest.lastIndex;
    } else {
      const plain = /[^,\r\n]*/y;
      plain.lastIndex = position;
      field = plain.exec(text)?.[0] ?? "";
      position = plain.lastIndex;
    }
    record.push(field);
    const separator = text[position];
    if (separator === ",") {
      position++;
      continue;
    }
    records.push(record);
    record = [];
    if (separator === undefined) break;
    position += separator === "\r" && text[position + 1] === "\n" ? 2 : 1;
    line++;
    if (position === text.length) break;
  }
  return records;
}

function countLineBreaks(text: string): number {
  let count = 0;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) count++;
  return count;
}

/** One ligand per line: SMILES, whitespace, optional name; blank lines and `#` comments are skipped. */
function parseSmiLigands(text: string): LigandRow[] {
  const rows: LigandRow[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [, smiles = "", name = ""] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    // Some tools write a header line; "smiles" itself is not a molecule anyone screens.
    if (rows.length === 0 && smiles.toLowerCase() === "smiles") continue;
    const index = rows.length;
    rows.push({ index, name: name.trim() || defaultName(index), smiles });
  }
  return rows;
}

/** Records end at `$$$$`; the name is the molblock's first line; RDKit turns each molblock into SMILES. */
function parseSdfLigands(rdkit: Rdkit, text: string): LigandList {
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

/** Makes names unique: a repeat gets `-2`, `-3`, … skipping suffixes that some other name already has. */
export function uniqueNames(names: readonly string[]): { names: string[]; renamed: Renamed[] } {
  const taken = new Set(names);
  const used = new Set<string>();
  const nextSuffix = new Map<string, number>();
  const renamed: Renamed[] = [];
  const unique = names.map((name, index) => {
    if (!used.has(name)) {
      used.add(name);
      return name;
    }
    let suffix = nextSuffix.get(name) ?? 2;
    while (taken.has(`${name}-${suffix}`)) suffix++;
    const to = `${name}-${suffix}`;
    nextSuffix.set(name, suffix + 1);
    taken.add(to);
    used.add(to);
    renamed.push({ index, from: name, to });
    return to;
  });
  return { names: unique, renamed };
}

/** Names for a whole list, made unique once: later rows of a repeated name get a suffix. */
export interface LigandNaming {
  /** File position of each ligand. */
  indexes: number[];
  names: string[];
  renamed: Renamed[];
}

export function nameLigands(ligands: readonly LigandInput[]): LigandNaming {
  const indexes = ligands.map((ligand, position) => ligand.index ?? position);
  const unique = uniqueNames(
    ligands.map((ligand, position) => ligand.name?.trim() || defaultName(indexes[position]!)),
  );
  const renamed = unique.renamed.map((row) => ({ ...row, index: indexes[row.index]! }));
  return { indexes, names: unique.names, renamed };
}

export interface LigandVerdicts {
  valid: LigandEntry[];
  invalid: InvalidLigand[];
}

/**
 * Checks `ligands[from..to)` in order into `into`, yielding after each one so a caller can pause.
 * Each distinct SMILES of the range is parsed once.
 */
function* checkEach(
  rdkit: Rdkit,
  ligands: readonly LigandInput[],
  naming: LigandNaming,
  range: { from: number; to: number },
  options: { maxHeavyAtoms?: number },
  into: LigandVerdicts,
): Generator<void> {
  const checked = new Map<string, LigandCheck>();
  for (let position = range.from; position < range.to; position++) {
    const ligand = ligands[position]!;
    const index = naming.indexes[position]!;
    const name = naming.names[position]!;
    if (ligand.unreadable !== undefined) {
      into.invalid.push({ index, name, reason: ligand.unreadable });
      continue;
    }
    let check = checked.get(ligand.smiles);
    if (check === undefined) {
      check = checkLigand(rdkit, ligand.smiles);
      checked.set(ligand.smiles, check);
    }
    if (!check.ok) {
      into.invalid.push({ index, name, reason: check.reason, smiles: ligand.smiles });
    } else if (options.maxHeavyAtoms !== undefined && check.heavyAtoms > options.maxHeavyAtoms) {
      into.invalid.push({
        index,
        name,
        reason: `${check.heavyAtoms} heavy atoms; this model takes at most ${options.maxHeavyAtoms}`,
        smiles: ligand.smiles,
      });
    } else {
      into.valid.push({
        index,
        name,
        smiles: check.smiles,
        inputSmiles: ligand.smiles,
        heavyAtoms: check.heavyAtoms,
        fragmentsDropped: check.fragmentsDropped,
      });
    }
    yield;
  }
}

/**
 * Checks every ligand of a submission at once: unique names, SMILES RDKit accepts, and the model's
 * atom limit. For a few ligands; big lists go through `checkLigandRange`, which lets the server breathe.
 */
export function validateLigands(
  rdkit: Rdkit,
  ligands: readonly LigandInput[],
  options: { maxLigands: number; maxHeavyAtoms?: number },
): LigandValidation {
  if (ligands.length > options.maxLigands) {
    throw unprocessable(
      "too_many_ligands",
      `${ligands.length} ligands given; at most ${options.maxLigands} are accepted at once`,
      { count: ligands.length, max: options.maxLigands },
    );
  }
  const naming = nameLigands(ligands);
  const verdicts: LigandVerdicts = { valid: [], invalid: [] };
  const steps = checkEach(rdkit, ligands, naming, { from: 0, to: ligands.length }, options, verdicts);
  while (!steps.next().done);
  return { ...verdicts, renamed: naming.renamed };
}

/** How long one stretch of checking may hold the event loop (RDKit takes 0.07–0.3 ms per SMILES). */
const CHECK_SLICE_MS = 8;

/**
 * Checks `ligands[from..to)` on this thread in slices of a few milliseconds, giving the event loop
 * a turn between slices so requests and heartbeats are answered while a big batch is checked. One
 * RDKit per process keeps the server's memory flat; worker threads would each load their own.
 */
export async function checkLigandRange(
  rdkit: Rdkit,
  ligands: readonly LigandInput[],
  naming: LigandNaming,
  range: { from: number; to: number },
  options: { maxHeavyAtoms?: number },
): Promise<LigandVerdicts> {
  const verdicts: LigandVerdicts = { valid: [], invalid: [] };
  const steps = checkEach(rdkit, ligands, naming, range, options, verdicts);
  let sliceStarted = performance.now();
  while (!steps.next().done) {
    if (performance.now() - sliceStarted > CHECK_SLICE_MS) {
      await setImmediate();
      sliceStarted = performance.now();
    }
  }
  return verdicts;
}
