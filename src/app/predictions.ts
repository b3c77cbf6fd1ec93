import { text } from "node:stream/consumers";
import { validateLigandsInParallel } from "../chem/check-pool.ts";
import {
  type InvalidLigand,
  type LigandEntry,
  type LigandInput,
  parseLigandList,
  validateLigands,
} from "../chem/ligands.ts";
import { loadRdkit } from "../chem/rdkit.ts";
import { boxFromLigand, parseReceptor } from "../chem/receptor.ts";
import { DEFAULT_RETRY_POLICY } from "../domain/backoff.ts";
import type { Batch } from "../domain/batch.ts";
import { badRequest, notFound, unprocessable } from "../domain/errors.ts";
import { newId } from "../domain/ids.ts";
import type { Job } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { ModelSpec } from "../models/model.ts";
import { resolveParameters } from "../models/parameters.ts";
import { MODEL_SPECS } from "../models/registry.ts";
import type { NewBatchChild } from "../store/store.ts";
import type { AppContext } from "./context.ts";
import { getDataset } from "./datasets.ts";

/** What every input of a prediction (or of a batch) shares; stored once per batch. */
export interface PredictionTargetSpec {
  model: string;
  model_version: string;
  target: {
    receptor: { dataset_id: string; path: string; blob_key: string } | null;
    protein_sequence: string | null;
  };
  parameters: JsonObject;
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
const RECEPTOR_EXTENSIONS = [".pdb", ".pdbqt", ".ent"];
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
    return { ...base, target: { receptor: null, protein_sequence: sequence } };
  }
  if (!request.receptor) {
    throw unprocessable(
      "receptor_required",
      `Model ${spec.name} needs receptor: the id of a dataset holding a PDB or PDBQT file`,
    );
  }
  const dataset = await getDataset(ctx, orgId, request.receptor);
  const file = dataset.files.find((f) =>
    RECEPTOR_EXTENSIONS.some((ext) => f.path.toLowerCase().endsWith(ext)),
  );
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

const policy = (ctx: AppContext) => ({
  maxAttempts: DEFAULT_RETRY_POLICY.maxAttempts,
  backoffMinMs: DEFAULT_RETRY_POLICY.backoffMinMs,
  backoffMaxMs: DEFAULT_RETRY_POLICY.backoffMaxMs,
  timeoutMs: ctx.config.defaultTimeoutS * 1000,
});

export async function submitPrediction(
  ctx: AppContext,
  orgId: string,
  request: PredictRequest,
): Promise<Job> {
  const spec = modelSpec(request.model);
  const target = await resolveTarget(ctx, orgId, spec, request);
  const checked = validateLigands(
    await loadRdkit(),
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
  const now = ctx.now();
  const job = await ctx.store.enqueue({
    id: newId("job"),
    orgId,
    kind: "predict",
    notebookId: null,
    spec: { ...target, ligand: ligandSpec(ligand, 0) } as unknown as JsonObject,
    priority: request.priority ?? 0,
    ...policy(ctx),
    runAt: now,
    createdAt: now,
  });
  ctx.events.emit("work");
  return job;
}

function ligandSpec(ligand: LigandEntry, index: number): PredictionJobSpec["ligand"] {
  return {
    input_id: `lig_${index}`,
    name: ligand.name,
    smiles: ligand.smiles,
    input_smiles: ligand.inputSmiles,
    fragments_dropped: ligand.fragmentsDropped,
  };
}

export async function submitBatch(ctx: AppContext, orgId: string, request: BatchRequest): Promise<Batch> {
  const spec = modelSpec(request.model);
  const target = await resolveTarget(ctx, orgId, spec, request);
  const ligands = await requestedLigands(ctx, orgId, request);
  const checked = await validateLigandsInParallel(ligands.entries, {
    maxLigands: ctx.config.maxBatchLigands,
    ...(spec.maxLigandAtoms !== undefined ? { maxHeavyAtoms: spec.maxLigandAtoms } : {}),
  });
  const invalid = [...ligands.errors, ...checked.invalid].sort((a, b) => a.index - b.index);
  if (invalid.length > 0 && !request.skip_invalid) {
    throw unprocessable(
      "invalid_ligands",
      `${invalid.length} of ${ligands.entries.length + ligands.errors.length} ligands are not usable (set skip_invalid to run the rest): ${invalid
        .slice(0, 5)
        .map((row) => `#${row.index} ${row.name}: ${row.reason}`)
        .join("; ")}${invalid.length > 5 ? "; …" : ""}`,
      { invalid },
    );
  }
  const failedAt = new Map(invalid.map((row) => [row.index, row]));
  const validAt = new Map(checked.valid.map((ligand) => [ligand.index, ligand]));
  const total = ligands.entries.length + ligands.errors.length;
  const children: NewBatchChild[] = [];
  for (let index = 0; index < total; index++) {
    const ligand = validAt.get(index);
    if (ligand) {
      children.push({
        id: newId("job"),
        spec: { model: spec.name, ligand: ligandSpec(ligand, index) } as unknown as JsonObject,
      });
      continue;
    }
    const bad = failedAt.get(index)!;
    children.push({
      id: newId("job"),
      spec: {
        model: spec.name,
        ligand: {
          input_id: `lig_${index}`,
          name: bad.name,
          smiles: "",
          input_smiles: bad.smiles ?? "",
          fragments_dropped: 0,
        },
      } as unknown as JsonObject,
      failure: { code: "invalid_ligand", message: bad.reason, retryable: false },
    });
  }
  const batch = await ctx.store.insertBatch(
    {
      id: newId("batch"),
      orgId,
      name: request.batch_name ?? `${spec.name} screen`,
      model: spec.name,
      modelVersion: spec.version,
      priority: request.priority ?? 0,
      maxConcurrent: request.max_concurrent ?? ctx.config.defaultMaxConcurrent,
      score: { name: spec.score.name, unit: spec.score.unit, better: spec.score.better },
      spec: {
        ...target,
        skipped: invalid.length,
        renamed: checked.renamed,
        fragments_dropped: checked.valid.filter((l) => l.fragmentsDropped > 0).map((l) => l.name),
      } as unknown as JsonObject,
      createdAt: ctx.now(),
    },
    children,
    policy(ctx),
  );
  ctx.events.emit("work");
  return batch;
}

async function requestedLigands(
  ctx: AppContext,
  orgId: string,
  request: BatchRequest,
): Promise<{ entries: LigandInput[]; errors: InvalidLigand[] }> {
  if (request.ligands && request.ligands_dataset) {
    throw badRequest("ligands_conflict", "Give either ligands or ligands_dataset, not both");
  }
  if (request.ligands) {
    if (request.ligands.length === 0) throw unprocessable("no_ligands", "ligands is empty");
    return { entries: request.ligands.map((l, index) => ({ ...l, index })), errors: [] };
  }
  if (!request.ligands_dataset) throw unprocessable("no_ligands", "Give ligands or ligands_dataset");
  const dataset = await getDataset(ctx, orgId, request.ligands_dataset);
  const file = dataset.files[0]!;
  const parsed = parseLigandList(await loadRdkit(), file.path, await text(await ctx.blobs.get(file.blobKey)));
  if (parsed.entries.length + parsed.errors.length === 0) {
    throw unprocessable("no_ligands", `${file.path} holds no ligands`);
  }
  return parsed;
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
