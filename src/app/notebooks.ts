import { assertSafeRelativePath } from "../blob/keys.ts";
import { badRequest, notFound, unprocessable } from "../domain/errors.ts";
import { newId } from "../domain/ids.ts";
import type { NotebookRecord } from "../store/store.ts";
import type { AppContext } from "./context.ts";

/** Checks that bytes are a notebook Hangar can run: JSON, nbformat ≥ 4, a list of cells. */
export function parseNotebook(bytes: Buffer, fileName: string): { cellCount: number } {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch (error) {
    throw badRequest("invalid_notebook", `${fileName} is not JSON: ${(error as Error).message}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw badRequest("invalid_notebook", `${fileName} is not a notebook: expected a JSON object`);
  }
  const { nbformat, cells } = doc as { nbformat?: unknown; cells?: unknown };
  if (typeof nbformat !== "number") {
    throw badRequest("invalid_notebook", `${fileName} is not a notebook: it has no "nbformat" number`);
  }
  if (nbformat !== 4) {
    // nbformat 4 is the current major version; an unknown later one cannot be assumed compatible.
    throw unprocessable(
      "unsupported_nbformat",
      nbformat < 4
        ? `${fileName} uses nbformat ${nbformat}; Hangar runs nbformat 4 (convert it with "jupyter nbconvert --to notebook")`
        : `${fileName} uses nbformat ${nbformat}, which does not exist yet; Hangar runs nbformat 4`,
      { nbformat },
    );
  }
  if (!Array.isArray(cells)) {
    throw badRequest("invalid_notebook", `${fileName} is not a notebook: "cells" is not a list`);
  }
  return { cellCount: cells.length };
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export async function createNotebook(ctx: AppContext, orgId: string, fileName: string, uploaded: Buffer) {
  // Editors on Windows save a byte-order mark that JSON (and Jupyter) refuse: the notebook is kept without it.
  const bytes = uploaded.subarray(0, 3).equals(UTF8_BOM) ? uploaded.subarray(3) : uploaded;
  // Only the last segment is kept as the notebook's name, but the whole name must be safe to store.
  const name = assertSafeRelativePath(fileName).split("/").pop()!;
  if (!name.toLowerCase().endsWith(".ipynb")) {
    throw badRequest("invalid_notebook", `${fileName} is not an .ipynb file`);
  }
  const { cellCount } = parseNotebook(bytes, fileName);
  const id = newId("nb");
  const blobKey = `notebooks/${id}/notebook.ipynb`;
  await ctx.blobs.put(blobKey, bytes);
  const record: NotebookRecord = {
    id,
    orgId,
    name,
    size: bytes.length,
    cellCount,
    blobKey,
    createdAt: ctx.now(),
  };
  try {
    await ctx.store.insertNotebook(record);
  } catch (error) {
    await ctx.blobs.delete(blobKey);
    throw error;
  }
  return record;
}

export async function getNotebook(ctx: AppContext, orgId: string, id: string): Promise<NotebookRecord> {
  const notebook = await ctx.store.getNotebook(orgId, id);
  if (!notebook) throw notFound("notebook_not_found", `Notebook ${id} does not exist`, { notebook_id: id });
  return notebook;
}
