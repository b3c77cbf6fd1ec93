import { unprocessable } from "../domain/errors.ts";

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

/** What RDKit does for Hangar (chemistry.ts runs it in a worker thread). */
export interface Chemistry {
  /** RDKit's verdict on each SMILES, in order. */
  checkSmiles(smiles: readonly string[]): Promise<LigandCheck[]>;
  /** An SD file's records as SMILES rows, or the reason each unreadable record was refused. */
  readSdf(text: string): Promise<LigandList>;
}

const LIGAND_FILE_EXTENSIONS = [".csv", ".smi", ".smiles", ".sdf"] as const;

/** Reads a ligand list: `.csv` (with a `smiles` column), `.smi`/`.smiles`, or `.sdf` (through RDKit). */
export async function parseLigandList(
  chemistry: Chemistry,
  fileName: string,
  content: string,
): Promise<LigandList> {
  const text = content.startsWith("\uFEFF") ? content.slice(1) : content;
  const extension = /\.[^./\\]+$/.exec(fileName.toLowerCase())?.[0] ?? "";
  switch (extension) {
    case ".csv":
      return { entries: parseCsvLigands(fileName, text), errors: [] };
    case ".smi":
    case ".smiles":
      return { entries: parseSmiLigands(text), errors: [] };
    case ".sdf":
      return chemistry.readSdf(text);
    default:
      throw unprocessable(
        "unsupported_ligand_file",
        `${fileName}: ligand files must be ${LIGAND_FILE_EXTENSIONS.join(", ")}`,
        { file: fileName, supported: [...LIGAND_FILE_EXTENSIONS] },
      );
  }
}

export const defaultName = (index: number) => `ligand_${index + 1}`;

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
 * Sorts `ligands[from..to)` into valid and invalid rows, in order, from RDKit's verdict on each
 * distinct SMILES, and the model's atom limit.
 */
function verdictsOf(
  ligands: readonly LigandInput[],
  naming: LigandNaming,
  range: { from: number; to: number },
  options: { maxHeavyAtoms?: number },
  checks: ReadonlyMap<string, LigandCheck>,
): LigandVerdicts {
  const verdicts: LigandVerdicts = { valid: [], invalid: [] };
  for (let position = range.from; position < range.to; position++) {
    const ligand = ligands[position]!;
    const index = naming.indexes[position]!;
    const name = naming.names[position]!;
    if (ligand.unreadable !== undefined) {
      verdicts.invalid.push({ index, name, reason: ligand.unreadable });
      continue;
    }
    const check = checks.get(ligand.smiles)!;
    if (!check.ok) {
      verdicts.invalid.push({ index, name, reason: check.reason, smiles: ligand.smiles });
    } else if (options.maxHeavyAtoms !== undefined && check.heavyAtoms > options.maxHeavyAtoms) {
      verdicts.invalid.push({
        index,
        name,
        reason: `${check.heavyAtoms} heavy atoms; this model takes at most ${options.maxHeavyAtoms}`,
        smiles: ligand.smiles,
      });
    } else {
      verdicts.valid.push({
        index,
        name,
        smiles: check.smiles,
        inputSmiles: ligand.smiles,
        heavyAtoms: check.heavyAtoms,
        fragmentsDropped: check.fragmentsDropped,
      });
    }
  }
  return verdicts;
}

/**
 * Checks every ligand of a submission at once: unique names, SMILES RDKit accepts, and the model's
 * atom limit. Big lists go through `checkLigandRange` a chunk at a time.
 */
export async function validateLigands(
  chemistry: Chemistry,
  ligands: readonly LigandInput[],
  options: { maxLigands: number; maxHeavyAtoms?: number },
): Promise<LigandValidation> {
  if (ligands.length > options.maxLigands) {
    throw unprocessable(
      "too_many_ligands",
      `${ligands.length} ligands given; at most ${options.maxLigands} are accepted at once`,
      { count: ligands.length, max: options.maxLigands },
    );
  }
  const naming = nameLigands(ligands);
  const verdicts = await checkLigandRange(
    chemistry,
    ligands,
    naming,
    { from: 0, to: ligands.length },
    options,
  );
  return { ...verdicts, renamed: naming.renamed };
}

/** Checks `ligands[from..to)`; each distinct SMILES of the range is parsed once. */
export async function checkLigandRange(
  chemistry: Chemistry,
  ligands: readonly LigandInput[],
  naming: LigandNaming,
  range: { from: number; to: number },
  options: { maxHeavyAtoms?: number },
): Promise<LigandVerdicts> {
  const distinct = new Set<string>();
  for (let position = range.from; position < range.to; position++) {
    const ligand = ligands[position]!;
    if (ligand.unreadable === undefined) distinct.add(ligand.smiles);
  }
  const smiles = [...distinct];
  const checks = await chemistry.checkSmiles(smiles);
  return verdictsOf(ligands, naming, range, options, new Map(smiles.map((s, i) => [s, checks[i]!])));
}
