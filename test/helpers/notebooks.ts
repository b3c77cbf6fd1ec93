import { writeFile } from "node:fs/promises";
import { join } from "node:path";

interface Cell {
  source: string;
  tags?: string[];
}

/** Writes an nbformat 4.5 notebook of code cells and returns its path. */
export async function writeNotebook(dir: string, name: string, cells: Cell[]): Promise<string> {
  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
    cells: cells.map((cell, i) => ({
      id: `c${i}`,
      cell_type: "code",
      execution_count: null,
      metadata: cell.tags ? { tags: cell.tags } : {},
      outputs: [],
      source: cell.source,
    })),
  };
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(notebook));
  return path;
}
