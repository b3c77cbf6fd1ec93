import type { Readable } from "node:stream";
import { assertSafeRelativePath } from "../blob/keys.ts";
import { badRequest, conflict, notFound } from "../domain/errors.ts";
import { newId } from "../domain/ids.ts";
import type { DatasetFileRecord, DatasetRecord } from "../store/store.ts";
import type { AppContext } from "./context.ts";

export interface UploadedFile {
  fileName: string;
  stream: Readable;
}

/**
 * Stores every uploaded file under `datasets/{id}/`, then records the dataset. Any bad file name or
 * failed stream removes what was already written, so a rejected upload leaves nothing behind.
 */
export async function createDataset(
  ctx: AppContext,
  orgId: string,
  files: AsyncIterable<UploadedFile>,
  name: () => string | undefined,
): Promise<DatasetRecord> {
  const id = newId("ds");
  const prefix = `datasets/${id}/`;
  const stored: DatasetFileRecord[] = [];
  try {
    for await (const file of files) {
      const path = assertSafeRelativePath(file.fileName);
      if (stored.some((f) => f.path === path)) {
        file.stream.resume();
        throw conflict("duplicate_file_name", `The upload contains "${path}" twice`, { name: path });
      }
      const blobKey = `${prefix}${path}`;
      const object = await ctx.blobs.put(blobKey, file.stream);
      stored.push({ path, size: object.size, blobKey });
    }
    if (stored.length === 0) throw badRequest("no_files", "The upload contains no files");
    const record: DatasetRecord = {
      id,
      orgId,
      name: datasetName(name()) ?? stored[0]!.path.split("/")[0]!,
      totalSize: stored.reduce((sum, f) => sum + f.size, 0),
      files: stored,
      createdAt: ctx.now(),
    };
    await ctx.store.insertDataset(record);
    return record;
  } catch (error) {
    await ctx.blobs.delete(prefix);
    throw error;
  }
}

const MAX_NAME_LENGTH = 200;

/** A dataset's display name: free text, but one line of printable characters. */
function datasetName(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  if (/\p{Cc}/u.test(name) || name.trim() === "" || name.length > MAX_NAME_LENGTH) {
    throw badRequest(
      "invalid_dataset_name",
      `Dataset name ${JSON.stringify(name)} is not allowed: use 1 to ${MAX_NAME_LENGTH} characters and no control characters`,
      { name },
    );
  }
  return name;
}

export async function getDataset(ctx: AppContext, orgId: string, id: string): Promise<DatasetRecord> {
  const dataset = await ctx.store.getDataset(orgId, id);
  if (!dataset) throw notFound("dataset_not_found", `Dataset ${id} does not exist`, { dataset_id: id });
  return dataset;
}
