import { createInterface } from "node:readline";
import type { Readable } from "node:stream";

/**
 * A3M, the MSA format Boltz and AlphaFold3 read: `>` header lines, each followed by one aligned
 * sequence; the first sequence is the query. Lowercase letters are insertions and `-` gaps, which
 * the query itself should not have, but strip them to compare only its residues.
 */
export const MSA_FILE_EXTENSION = ".a3m";

/** Null when `text` is an A3M whose query is `proteinSequence`; otherwise what is wrong with it. */
export function a3mProblem(text: string, proteinSequence: string): string | null {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== "");
  if (lines[0]?.startsWith(">") !== true) return 'it does not start with a ">" header line';
  const query: string[] = [];
  for (const line of lines.slice(1)) {
    if (line.startsWith(">")) break;
    query.push(line.trim());
  }
  const residues = query.join("").replace(/[a-z.-]/g, "");
  if (residues === "") return "its first record has no sequence";
  if (residues.toUpperCase() !== proteinSequence) {
    return `its first sequence (the query, ${residues.length} residues) is not protein_sequence (${proteinSequence.length} residues)`;
  }
  return null;
}

/**
 * The first record of an A3M (its header and the query's lines) as text, read from the start of
 * `input` only: MSAs run to hundreds of megabytes, and checking one needs just its query.
 */
export async function firstA3mRecord(input: Readable): Promise<string> {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  const record: string[] = [];
  try {
    for await (const line of lines) {
      if (line.startsWith(">") && record.length > 0) break;
      record.push(line);
    }
  } finally {
    lines.close();
    input.destroy();
  }
  return record.join("\n");
}
