import { unprocessable } from "../domain/errors.ts";

/** The atoms of the first model, column by column so that a large receptor stays small. */
export interface ReceptorAtoms {
  count: number;
  /** x, y, z of atom i at 3i, 3i + 1, 3i + 2, in Å. */
  coordinates: Float64Array;
  /** 1 for HETATM records, 0 for ATOM. */
  hetero: Uint8Array;
  /** Columns 13-16 as written: the alignment inside the four columns is part of the name. */
  names: string[];
  residueNames: string[];
  chains: string[];
  /** Residue number and insertion code, columns 23-27 as written. */
  residueIds: string[];
  elements: string[];
}

export interface HeteroResidue {
  name: string;
  /** Atoms over all copies. */
  atoms: number;
  /** How many residues (chain and number) carry this name. */
  copies: number;
}

export interface Receptor {
  format: "pdb" | "pdbqt";
  /** ATOM records other than water. */
  proteinAtoms: number;
  waterAtoms: number;
  /** HETATM residues other than water, in file order. */
  heteroResidues: HeteroResidue[];
  atoms: ReceptorAtoms;
}

export interface Box {
  center: [number, number, number];
  size: [number, number, number];
}

const RECEPTOR_EXTENSIONS = [".pdb", ".pdbqt", ".ent"];

/** A receptor file's format by its name (`.pdb`/`.ent` or `.pdbqt`); null for anything else. */
export function receptorFileFormat(fileName: string): "pdb" | "pdbqt" | null {
  const extension = /\.[^./\\]+$/.exec(fileName.toLowerCase())?.[0] ?? "";
  if (!RECEPTOR_EXTENSIONS.includes(extension)) return null;
  return extension === ".pdbqt" ? "pdbqt" : "pdb";
}
const WATER_NAMES = new Set(["HOH", "WAT", "H2O", "DOD", "SOL", "TIP", "TIP3"]);
const MIN_BOX_SIDE = 10;

/** AutoDock atom types that are not element symbols (PDBQT columns 78-79). */
const AUTODOCK_TYPE_ELEMENTS: Record<string, string> = {
  A: "C",
  NA: "N",
  NS: "N",
  OA: "O",
  OS: "O",
  SA: "S",
  HD: "H",
  HS: "H",
};

const isWater = (residueName: string) => WATER_NAMES.has(residueName);

/** Reads the ATOM and HETATM records (fixed PDB columns; PDBQT shares them up to column 54). */
export function parseReceptor(fileName: string, text: string): Receptor {
  const format = receptorFileFormat(fileName);
  if (format === null) {
    throw unprocessable(
      "invalid_receptor",
      `${fileName}: a receptor must be a ${RECEPTOR_EXTENSIONS.join(", ")} file`,
      { file: fileName },
    );
  }
  const coordinates: number[] = [];
  const hetero: number[] = [];
  const atoms: Omit<ReceptorAtoms, "count" | "coordinates" | "hetero"> = {
    names: [],
    residueNames: [],
    chains: [],
    residueIds: [],
    elements: [],
  };
  let keptAltLoc: string | undefined;
  const lines = text.split(/\r?\n/);
  for (let lineIndex = 0; lineIndex < lines.length; lineIndex++) {
    const line = lines[lineIndex]!;
    // Only the first model of an ensemble: the others would stack copies of the same atoms.
    if (line.startsWith("ENDMDL")) break;
    const isHetero = line.startsWith("HETATM");
    if (!isHetero && !line.startsWith("ATOM")) continue;
    const where = `${fileName} line ${lineIndex + 1}`;
    if (line.length < 54) {
      throw unprocessable("invalid_receptor", `${where}: the record ends before x, y, z (columns 31-54)`, {
        file: fileName,
        line: lineIndex + 1,
      });
    }
    // Alternate conformations: keep one, the first named in the file, as docking wants one structure.
    const altLoc = line[16]!;
    if (altLoc !== " ") {
      keptAltLoc ??= altLoc;
      if (altLoc !== keptAltLoc) continue;
    }
    const xyz = [line.slice(30, 38), line.slice(38, 46), line.slice(46, 54)].map(coordinate);
    if (!xyz.every(Number.isFinite)) {
      throw unprocessable(
        "invalid_receptor",
        `${where}: x, y, z (columns 31-54) are not numbers: "${line.slice(30, 54)}"`,
        { file: fileName, line: lineIndex + 1 },
      );
    }
    const name = line.slice(12, 16);
    coordinates.push(...xyz);
    hetero.push(isHetero ? 1 : 0);
    atoms.names.push(name);
    atoms.residueNames.push(line.slice(17, 21).trim());
    atoms.chains.push(line[21]!);
    atoms.residueIds.push(line.slice(22, 27).padEnd(5));
    atoms.elements.push(format === "pdbqt" ? pdbqtElement(line, name) : pdbElement(line, name));
  }
  const table: ReceptorAtoms = {
    count: hetero.length,
    coordinates: Float64Array.from(coordinates),
    hetero: Uint8Array.from(hetero),
    ...atoms,
  };
  const summary = summarise(table);
  if (summary.proteinAtoms === 0) {
    throw unprocessable(
      "invalid_receptor",
      `${fileName} has no ATOM records (protein atoms): is it a ${format.toUpperCase()} file of a protein?`,
      { file: fileName },
    );
  }
  return { format, ...summary, atoms: table };
}

/** The field as a number; NaN when blank (Number("") would be 0) or malformed. */
function coordinate(field: string): number {
  const trimmed = field.trim();
  return trimmed === "" ? Number.NaN : Number(trimmed);
}

const capitalised = (symbol: string) => symbol.charAt(0).toUpperCase() + symbol.slice(1).toLowerCase();

/** Columns 77-78 when they hold letters; older files put a record id there, so fall back on the name. */
function pdbElement(line: string, name: string): string {
  const symbol = line.slice(76, 78).trim();
  return /^[A-Za-z]{1,2}$/.test(symbol) ? capitalised(symbol) : elementFromName(name);
}

function pdbqtElement(line: string, name: string): string {
  const type = line.slice(77, 79).trim();
  if (!/^[A-Za-z]{1,2}$/.test(type)) return elementFromName(name);
  return AUTODOCK_TYPE_ELEMENTS[type.toUpperCase()] ?? capitalised(type);
}

/** The PDB convention: the symbol is right-justified in columns 13-14 (" CA " is carbon, "CA  " calcium). */
function elementFromName(name: string): string {
  const first = name[0] ?? " ";
  if (first === " " || /\d/.test(first)) return (name[1] ?? "").toUpperCase();
  return capitalised(name.slice(0, 2).replace(/[^A-Za-z]/g, ""));
}

function summarise(atoms: ReceptorAtoms): Omit<Receptor, "format" | "atoms"> {
  let proteinAtoms = 0;
  let waterAtoms = 0;
  const residues = new Map<string, { atoms: number; instances: Set<string> }>();
  for (let i = 0; i < atoms.count; i++) {
    const residueName = atoms.residueNames[i]!;
    if (isWater(residueName)) {
      waterAtoms++;
    } else if (atoms.hetero[i] === 1) {
      let residue = residues.get(residueName);
      if (residue === undefined) {
        residue = { atoms: 0, instances: new Set() };
        residues.set(residueName, residue);
      }
      residue.atoms++;
      residue.instances.add(`${atoms.chains[i]}${atoms.residueIds[i]}`);
    } else {
      proteinAtoms++;
    }
  }
  const heteroResidues = [...residues].map(([name, residue]) => ({
    name,
    atoms: residue.atoms,
    copies: residue.instances.size,
  }));
  return { proteinAtoms, waterAtoms, heteroResidues };
}

/**
 * A docking box around a ligand bound in the receptor: centred on the centroid of that residue's
 * HETATM atoms (its first copy, when several chains carry one), each side its extent plus padding on
 * both ends, rounded up to 0.1 Å and at least 10 Å.
 */
export function boxFromLigand(receptor: Receptor, residueName: string, paddingAngstrom = 8): Box {
  if (!Number.isFinite(paddingAngstrom) || paddingAngstrom < 0) {
    throw unprocessable(
      "invalid_box_padding",
      `The box padding must be 0 Å or more, not ${paddingAngstrom}`,
      {
        box_padding: paddingAngstrom,
      },
    );
  }
  const wanted = residueName.trim().toUpperCase();
  const { atoms } = receptor;
  const first = atoms.residueNames.findIndex(
    (name, i) => atoms.hetero[i] === 1 && name.toUpperCase() === wanted && !isWater(name),
  );
  if (first < 0) {
    const available = receptor.heteroResidues.map((residue) => residue.name);
    throw unprocessable(
      "box_ligand_not_found",
      `The receptor has no HETATM residue "${residueName}"; ${
        available.length > 0
          ? `its HETATM residues are: ${available.join(", ")}`
          : "it has no HETATM residues besides water"
      }`,
      { box_ligand: residueName, available },
    );
  }
  const instance = `${atoms.chains[first]}${atoms.residueIds[first]}`;
  const members: number[] = [];
  for (let i = first; i < atoms.count; i++) {
    if (
      atoms.hetero[i] === 1 &&
      atoms.residueNames[i] === atoms.residueNames[first] &&
      `${atoms.chains[i]}${atoms.residueIds[i]}` === instance
    ) {
      members.push(i);
    }
  }
  const alongAxis = (axis: number) => {
    const values = members.map((i) => atoms.coordinates[3 * i + axis]!);
    const mean = values.reduce((total, value) => total + value, 0) / values.length;
    const extent = Math.max(...values) - Math.min(...values);
    return {
      center: Math.round(mean * 1000) / 1000,
      size: Math.max(MIN_BOX_SIDE, ceilTenth(extent + 2 * paddingAngstrom)),
    };
  };
  const [x, y, z] = [alongAxis(0), alongAxis(1), alongAxis(2)];
  return { center: [x.center, y.center, z.center], size: [x.size, y.size, z.size] };
}

/** Rounds up to 0.1, ignoring floating-point dust (20.000000001 stays 20). */
const ceilTenth = (value: number) => Math.ceil(value * 10 - 1e-6) / 10;
