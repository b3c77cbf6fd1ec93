import { text } from "node:stream/consumers";
import {
  type Chemistry,
  checkLigandRange,
  type InvalidLigand,
  type LigandEntry,
  type LigandInput,
  type LigandVerdicts,
  nameLigands,
  parseLigandList,
  validateLigands,
} from "../chem/ligands.ts";
import { a3mProblem, firstA3mRecord, MSA_FILE_EXTENSION } from "../chem/msa.ts";
import { boxFromLigand, parseReceptor, receptorFileFormat } from "../chem/receptor.ts";
import type { Principal } from "../domain/access.ts";
import { DEFAULT_RETRY_POLICY } from "../domain/backoff.ts";
import type { Batch } from "../domain/batch.ts";
import { badRequest, notFound, unprocessable } from "../domain/errors.ts";
import { newId } from "../domain/ids.ts";
import type { Job } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { ModelSpec } from "../models/model.ts";
import { resolveParameters } from "../models/parameters.ts";
import { MODEL_SPECS } from "../models/registry.ts";
import type { NewBatch, NewBatchChild } from "../store/store.ts";
import { batchArea } from "./batch-results.ts";
import { estimate, holdCredits, type Needs } from "./billing.ts";
import type { AppContext } from "./context.ts";
import { getDataset } from "./datasets.ts";
import { defaultPriority } from "./org-policy.ts";

/** What every input of a prediction (or of a batch) shares; stored once per batch. */
export interface PredictionTargetSpec {
  model: string;
  model_version: string;
  target: {
    receptor: DatasetFileRef | null;
    protein_sequence: string | null;
    /** A precomputed MSA of the protein (A3M), for models that accept one. */
    msa?: DatasetFileRef | null;
  };
  parameters: JsonObject;
}

/** One file of a dataset, as a target refers to it. */
interface DatasetFileRef {
  dataset_id: string;
  path: string;
  blob_key: string;
}

/** One ligand's job. A single prediction's spec carries its target too. */
export interface PredictionJobSpec {
  model: string;
  ligand: { input_id: string; name: string; smiles: string; input_smiles: string; fragments_dropped: number };
}

export interface TargetRequest {
  model: string;
  protein_sequence?: string;
  receptor?: string;
  /** Dataset id of an A3M file: the protein's precomputed MSA. */
  msa?: string;
  parameters?: JsonObject;
}

export interface PredictRequest extends TargetRequest {
  ligand_smiles: string;
  ligand_name?: string;
  priority?: number;
}

export interface BatchRequest extends TargetRequest {
  batch_name?: string;
  ligands?: { name?: string; smiles: string }[];
  ligands_dataset?: string;
  max_concurrent?: number;
  priority?: number;
  skip_invalid?: boolean;
}

/** Parameters the control plane consumes itself rather than passing to the model. */
const CONTROL_PARAMETERS = ["box_ligand", "box_padding"];
const AMINO_ACIDS = /^[ACDEFGHIKLMNPQRSTVWYXBZUO]+$/;
const MAX_SEQUENCE_LENGTH = 5_000;

export function modelSpec(name: string): ModelSpec {
  const spec = MODEL_SPECS.get(name);
  if (!spec) {
    throw unprocessable(
      "unknown_model",
      `Unknown model "${name}". Known models: ${[...MODEL_SPECS.keys()].join(", ")}`,
      {
        known: [...MODEL_SPECS.keys()],
      },
    );
  }
  return spec;
}

/** Checks the target the model needs and resolves the parameters (the docking box included). */
async function resolveTarget(
  ctx: AppContext,
  orgId: string,
  spec: ModelSpec,
  request: TargetRequest,
): Promise<PredictionTargetSpec> {
  const given = request.parameters ?? {};
  const parameters = resolveParameters(spec, given, CONTROL_PARAMETERS);
  const base = { model: spec.name, model_version: spec.version, parameters };
  if (spec.target === "protein_sequence") {
    const sequence = (request.protein_sequence ?? "").replace(/\s+/g, "").toUpperCase();
    if (!sequence) {
      throw unprocessable("protein_sequence_required", `Model ${spec.name} needs protein_sequence`);
    }
    if (!AMINO_ACIDS.test(sequence) || sequence.length > MAX_SEQUENCE_LENGTH) {
      throw unprocessable(
        "invalid_protein_sequence",
        `protein_sequence must be one-letter amino-acid codes, at most ${MAX_SEQUENCE_LENGTH} of them`,
      );
    }
    const msa = await resolveMsa(ctx, orgId, spec, request, sequence);
    return { ...base, target: { receptor: null, protein_sequence: sequence, msa } };
  }
  if (request.msa !== undefined) {
    throw unprocessable(
      "msa_not_supported",
      `Model ${spec.name} takes no MSA; msa is for protein-sequence models`,
    );
  }
  if (!request.receptor) {
    throw unprocessable(
      "receptor_required",
      `Model ${spec.name} needs receptor: the id of a dataset holding a PDB or PDBQT file`,
    );
  }
  const dataset = await getDataset(ctx, orgId, request.receptor);
  const file = dataset.files.find((f) => receptorFileFormat(f.path) !== null);
  if (!file) {
    throw unprocessable(
      "invalid_receptor",
      `Dataset ${dataset.id} has no .pdb or .pdbqt file (it has ${dataset.files.map((f) => f.path).join(", ")})`,
    );
  }
  const receptor = parseReceptor(file.path, await text(await ctx.blobs.get(file.blobKey)));
  // A residue name may well be digits ("478"), which `-p box_ligand=478` sends as a number.
  const boxLigand = typeof given.box_ligand === "number" ? String(given.box_ligand) : given.box_ligand;
  if (typeof boxLigand === "string") {
    const padding = typeof given.box_padding === "number" ? given.box_padding : undefined;
    const box = boxFromLigand(receptor, boxLigand, padding);
    [parameters.center_x, parameters.center_y, parameters.center_z] = box.center;
    [parameters.size_x, parameters.size_y, parameters.size_z] = box.size;
    parameters.box_ligand = boxLigand;
  } else if (boxLigand !== undefined) {
    throw badRequest("invalid_parameter", 'Parameter "box_ligand" must be a residue name such as "478"');
  }
  const boxFields = ["center_x", "center_y", "center_z", "size_x", "size_y", "size_z"];
  const missing = boxFields.filter((name) => name in spec.parameters && parameters[name] === undefined);
  if (missing.length > 0) {
    throw unprocessable(
      "box_required",
      `Model ${spec.name} needs a search box: give box_ligand (a ligand residue in the receptor) or ${missing.join(", ")}`,
      { missing },
    );
  }
  return {
    ...base,
    target: {
      receptor: { dataset_id: dataset.id, path: file.path, blob_key: file.blobKey },
      protein_sequence: null,
    },
  };
}

/** The request's MSA file, checked against the sequence it must align; null when none was given. */
async function resolveMsa(
  ctx: AppContext,
  orgId: string,
  spec: ModelSpec,
  request: TargetRequest,
  sequence: string,
): Promise<DatasetFileRef | null> {
  if (request.msa === undefined) return null;
  if (!spec.acceptsMsa) {
    throw unprocessable("msa_not_supported", `Model ${spec.name} takes no precomputed MSA`);
  }
  if (request.parameters?.msa_server_url !== undefined) {
    throw unprocessable(
      "msa_conflict",
      "Give msa (a precomputed MSA) or parameters.msa_server_url, not both",
    );
  }
  const dataset = await getDataset(ctx, orgId, request.msa);
  const file = dataset.files.find((f) => f.path.toLowerCase().endsWith(MSA_FILE_EXTENSION));
  if (!file) {
    throw unprocessable(
      "invalid_msa",
      `Dataset ${dataset.id} has no ${MSA_FILE_EXTENSION} file (it has ${dataset.files.map((f) => f.path).join(", ")})`,
    );
  }
  const problem = a3mProblem(await firstA3mRecord(await ctx.blobs.get(file.blobKey)), sequence);
  if (problem !== null) throw unprocessable("invalid_msa", `${file.path} is not a usable MSA: ${problem}`);
  return { dataset_id: dataset.id, path: file.path, blob_key: file.blobKey };
}

const policy = (ctx: AppContext) => ({
  maxAttempts: DEFAULT_RETRY_POLICY.maxAttempts,
  backoffMinMs: DEFAULT_RETRY_POLICY.backoffMinMs,
  backoffMaxMs: DEFAULT_RETRY_POLICY.backoffMaxMs,
  timeoutMs: ctx.config.defaultTimeoutS * 1000,
});

export async function submitPrediction(
  ctx: AppContext,
  principal: Principal,
  request: PredictRequest,
): Promise<Job> {
  const { orgId } = principal;
  const spec = modelSpec(request.model);
  const target = await resolveTarget(ctx, orgId, spec, request);
  const checked = await validateLigands(
    ctx.chemistry,
    [{ name: request.ligand_name ?? "ligand", smiles: request.ligand_smiles }],
    {
      maxLigands: 1,
      ...(spec.maxLigandAtoms !== undefined ? { maxHeavyAtoms: spec.maxLigandAtoms } : {}),
    },
  );
  const invalid = checked.invalid[0];
  if (invalid) {
    throw unprocessable("invalid_ligand", `ligand_smiles is not usable: ${invalid.reason}`, {
      invalid: [invalid],
    });
  }
  const ligand = checked.valid[0]!;
  const id = newId("job");
  await holdCredits(ctx, principal, id, await estimate(ctx, modelNeeds(spec), spec.expectedSecondsPerInput));
  const now = ctx.now();
  const job = await ctx.store.enqueue({
    id,
    orgId,
    kind: "predict",
    notebookId: null,
    spec: { ...target, ligand: ligandSpec(ligand, 0) } as unknown as JsonObject,
    priority: request.priority ?? (await defaultPriority(ctx, orgId)),
    ...policy(ctx),
    runAt: now,
    createdAt: now,
    userId: principal.userId,
  });
  ctx.events.emit("work");
  return job;
}

const modelNeeds = (spec: ModelSpec): Needs =>
  spec.resources.accelerator === "gpu"
    ? { minGpuMemoryGb: spec.resources.minGpuMemoryGiB ?? 1 }
    : { gpu: null };

function ligandSpec(ligand: LigandEntry, index: number): PredictionJobSpec["ligand"] {
  return {
    input_id: `lig_${index}`,
    name: ligand.name,
    smiles: ligand.smiles,
    input_smiles: ligand.inputSmiles,
    fragments_dropped: ligand.fragmentsDropped,
  };
}

/** What a batch's check needs once the request is gone: the rows in file order and how to treat bad ones. */
interface PendingLigands {
  ligands: LigandInput[];
  skip_invalid: boolean;
  max_heavy_atoms: number | null;
}

/** Children are checked, built and (for a big batch) stored this many at a time. */
const CHECK_CHUNK = 1_000;

/**
 * Accepts a batch. Up to `HANGAR_BATCH_SYNC_CHECK_LIMIT` ligands are checked before answering, so
 * bad rows are a 422 and nothing is stored; bigger batches are accepted at once as `validating` and
 * checked in the background, ending `queued` or `rejected` with the same listing.
 */
export async function submitBatch(
  ctx: AppContext,
  principal: Principal,
  request: BatchRequest,
): Promise<Batch> {
  const { orgId } = principal;
  const spec = modelSpec(request.model);
  const target = await resolveTarget(ctx, orgId, spec, request);
  const ligands = await requestedLigands(ctx, orgId, request);
  const total = ligands.length;
  if (total > ctx.config.maxBatchLigands) {
    throw unprocessable(
      "too_many_ligands",
      `${total} ligands given; at most ${ctx.config.maxBatchLigands} are accepted in one batch`,
      { count: total, max: ctx.config.maxBatchLigands },
    );
  }
  const batch: NewBatch = {
    id: newId("batch"),
    orgId,
    userId: principal.userId,
    name: request.batch_name ?? `${spec.name} screen`,
    model: spec.name,
    modelVersion: spec.version,
    priority: request.priority ?? (await defaultPriority(ctx, orgId)),
    maxConcurrent: request.max_concurrent ?? ctx.config.defaultMaxConcurrent,
    score: { name: spec.score.name, unit: spec.score.unit, better: spec.score.better },
    spec: target as unknown as JsonObject,
    createdAt: ctx.now(),
  };
  // Set aside just before the batch is stored, for the ligands it will run.
  const hold = async (count: number) =>
    holdCredits(
      ctx,
      principal,
      batch.id,
      await estimate(ctx, modelNeeds(spec), spec.expectedSecondsPerInput * count),
    );
  const pending: PendingLigands = {
    ligands,
    skip_invalid: request.skip_invalid ?? false,
    max_heavy_atoms: spec.maxLigandAtoms ?? null,
  };
  if (total > ctx.config.batchSyncCheckLimit) {
    await ctx.blobs.put(`${batchArea(batch.id)}/ligands.json`, Buffer.from(JSON.stringify(pending)));
    await hold(total);
    // The scheduler's batch-validation loop picks it up within one tick.
    return ctx.store.insertValidatingBatch(batch, total);
  }
  const children: NewBatchChild[] = [];
  const verdict = await checkInChunks(ctx.chemistry, spec.name, pending, async (chunk) => {
    children.push(...chunk);
  });
  if (verdict.rejection) {
    throw unprocessable("invalid_ligands", verdict.rejection, { invalid: verdict.invalid });
  }
  await hold(children.filter((child) => !child.failure).length);
  const created = await ctx.store.insertBatch(
    { ...batch, spec: { ...batch.spec, ...verdict.notes } },
    children,
    policy(ctx),
  );
  ctx.events.emit("work");
  return created;
}

interface Verdict {
  invalid: InvalidLigand[];
  /** Why the batch may not run: invalid rows without `skip_invalid`. */
  rejection: string | null;
  notes: JsonObject;
}

/**
 * Checks a batch's ligands a chunk at a time and hands each chunk's children, in file order, to
 * `store` (valid rows queued, invalid ones failed with their reason). Once a row is invalid and
 * `skip_invalid` is not set the batch will be rejected: checking goes on, to list every bad row,
 * but nothing more is stored. Only one chunk's children exist at a time.
 */
async function checkInChunks(
  chemistry: Chemistry,
  model: string,
  pending: PendingLigands,
  store: (children: NewBatchChild[]) => Promise<void>,
): Promise<Verdict> {
  const { ligands } = pending;
  const naming = nameLigands(ligands);
  const options = pending.max_heavy_atoms !== null ? { maxHeavyAtoms: pending.max_heavy_atoms } : {};
  const invalid: InvalidLigand[] = [];
  const fragmentsDropped: string[] = [];
  const check = (from: number) =>
    from < ligands.length
      ? checkLigandRange(
          chemistry,
          ligands,
          naming,
          { from, to: Math.min(ligands.length, from + CHECK_CHUNK) },
          options,
        )
      : null;
  // RDKit (in its worker) checks the next chunk while this thread stores the last one.
  let next = check(0);
  try {
    for (let from = 0; next !== null; from += CHECK_CHUNK) {
      const checked = await next;
      next = check(from + CHECK_CHUNK);
      invalid.push(...checked.invalid);
      for (const ligand of checked.valid) if (ligand.fragmentsDropped > 0) fragmentsDropped.push(ligand.name);
      if (invalid.length === 0 || pending.skip_invalid) await store(childrenOf(model, checked));
    }
  } catch (error) {
    // The chunk checked ahead is no longer wanted; its failure must not go unhandled.
    next?.catch(() => undefined);
    throw error;
  }
  const rejection =
    invalid.length > 0 && !pending.skip_invalid
      ? `${invalid.length} of ${ligands.length} ligands are not usable (set skip_invalid to run the rest): ${invalid
          .slice(0, 5)
          .map((row) => `#${row.index} ${row.name}: ${row.reason}`)
          .join("; ")}${invalid.length > 5 ? "; …" : ""}`
      : null;
  const notes = {
    skipped: invalid.length,
    renamed: naming.renamed,
    fragments_dropped: fragmentsDropped,
  } as unknown as JsonObject;
  return { invalid, rejection, notes };
}

/** One chunk's children in file order: valid rows queued, invalid ones failed with their reason. */
function childrenOf(model: string, checked: LigandVerdicts): NewBatchChild[] {
  const queued = checked.valid.map((ligand) => ({
    index: ligand.index,
    child: {
      id: newId("job"),
      spec: { model, ligand: ligandSpec(ligand, ligand.index) } as unknown as JsonObject,
    },
  }));
  const failed = checked.invalid.map((bad) => ({
    index: bad.index,
    child: {
      id: newId("job"),
      spec: {
        model,
        ligand: {
          input_id: `lig_${bad.index}`,
          name: bad.name,
          smiles: "",
          input_smiles: bad.smiles ?? "",
          fragments_dropped: 0,
        },
      } as unknown as JsonObject,
      failure: { code: "invalid_ligand", message: bad.reason, retryable: false },
    },
  }));
  return [...queued, ...failed].sort((a, b) => a.index - b.index).map((row) => row.child);
}

/** The background check of a batch accepted as `validating` (run by one server, under a lease). */
export async function validateBatch(ctx: AppContext, batch: Batch): Promise<Batch | null> {
  const pending = JSON.parse(
    await text(await ctx.blobs.get(`${batchArea(batch.id)}/ligands.json`)),
  ) as PendingLigands;
  const verdict = await checkInChunks(ctx.chemistry, batch.model, pending, (children) =>
    ctx.store.appendBatchChildren(batch, children, policy(ctx)),
  );
  if (verdict.rejection) {
    // Rejecting removes the children stored before the first bad row was met.
    const rejected = await ctx.store.rejectBatch(
      batch.id,
      {
        code: "invalid_ligands",
        message: verdict.rejection,
        invalid: verdict.invalid,
      } as unknown as JsonObject,
      ctx.now(),
    );
    ctx.events.emit(`batch:${batch.id}`);
    return rejected;
  }
  const opened = await ctx.store.openValidatedBatch(batch.id, verdict.notes, ctx.now());
  ctx.events.emit("work");
  ctx.events.emit(`batch:${batch.id}`);
  return opened;
}

/** The ligands of a batch request in file order; rows a file could not give are marked `unreadable`. */
async function requestedLigands(
  ctx: AppContext,
  orgId: string,
  request: BatchRequest,
): Promise<LigandInput[]> {
  if (request.ligands && request.ligands_dataset) {
    throw badRequest("ligands_conflict", "Give either ligands or ligands_dataset, not both");
  }
  if (request.ligands) {
    if (request.ligands.length === 0) throw unprocessable("no_ligands", "ligands is empty");
    return request.ligands.map((l, index) => ({ ...l, index }));
  }
  if (!request.ligands_dataset) throw unprocessable("no_ligands", "Give ligands or ligands_dataset");
  const dataset = await getDataset(ctx, orgId, request.ligands_dataset);
  const file = dataset.files[0]!;
  const parsed = await parseLigandList(
    ctx.chemistry,
    file.path,
    await text(await ctx.blobs.get(file.blobKey)),
  );
  if (parsed.entries.length + parsed.errors.length === 0) {
    throw unprocessable("no_ligands", `${file.path} holds no ligands`);
  }
  if (parsed.errors.length === 0) return parsed.entries;
  const unreadable = parsed.errors.map((row) => ({
    index: row.index,
    name: row.name,
    smiles: "",
    unreadable: row.reason,
  }));
  return [...parsed.entries, ...unreadable].sort((a, b) => a.index - b.index);
}

export async function getPredictionJob(ctx: AppContext, orgId: string, id: string): Promise<Job> {
  const job = await ctx.store.getJob(orgId, id);
  if (job?.kind !== "predict") throw notFound("job_not_found", `Job ${id} does not exist`, { job_id: id });
  return job;
}

export async function getBatch(ctx: AppContext, orgId: string, id: string): Promise<Batch> {
  const batch = await ctx.store.getBatch(orgId, id);
  if (!batch) throw notFound("batch_not_found", `Batch ${id} does not exist`, { batch_id: id });
  return batch;
}
