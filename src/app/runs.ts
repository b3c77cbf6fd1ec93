import type { Principal } from "../domain/access.ts";
import { DEFAULT_RETRY_POLICY } from "../domain/backoff.ts";
import { badRequest, conflict, notFound, unprocessable } from "../domain/errors.ts";
import { KNOWN_GPU_TYPES, normaliseGpuType } from "../domain/gpu.ts";
import { newId } from "../domain/ids.ts";
import { canCancel, type GpuRequest, type Job } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import { validateParameters } from "../domain/parameters.ts";
import type { ProvisioningStrategy } from "../domain/provisioning.ts";
import type { DatasetRecord } from "../store/store.ts";
import { estimate, holdCredits } from "./billing.ts";
import type { AppContext } from "./context.ts";
import { getDataset } from "./datasets.ts";
import { getNotebook } from "./notebooks.ts";
import { defaultPriority } from "./org-policy.ts";

export interface RunRequest {
  datasets?: string[];
  parameters?: JsonObject;
  gpu?: GpuRequest | null;
  strategy?: ProvisioningStrategy;
  priority?: number;
  timeout_s?: number;
  max_attempts?: number;
  backoff_min_s?: number;
  backoff_max_s?: number;
}

/** What a notebook run job carries; the agent's assignment is derived from it. */
export interface NotebookRunSpec extends JsonObject {
  notebook_id: string;
  notebook_name: string;
  datasets: string[];
  parameters: JsonObject;
  gpu: { type: string; count: number } | null;
  /** How its cloud instance is launched; null: the deployment's default. */
  strategy: ProvisioningStrategy | null;
}

export const runArea = (runId: string) => `runs/${runId}`;

async function resolveDatasets(ctx: AppContext, orgId: string, ids: string[]): Promise<DatasetRecord[]> {
  const datasets: DatasetRecord[] = [];
  const owners = new Map<string, string>();
  for (const id of ids) {
    const dataset = await getDataset(ctx, orgId, id);
    for (const file of dataset.files) {
      const other = owners.get(file.path);
      if (other && other !== id) {
        throw conflict(
          "dataset_conflict",
          `Datasets ${other} and ${id} both contain "${file.path}"; their files share one input directory`,
          { path: file.path },
        );
      }
      owners.set(file.path, id);
    }
    datasets.push(dataset);
  }
  return datasets;
}

function resolveGpu(gpu: GpuRequest | null | undefined): NotebookRunSpec["gpu"] {
  if (!gpu) return null;
  const type = normaliseGpuType(gpu.type);
  if (!type) {
    throw unprocessable(
      "unknown_gpu_type",
      `Unknown GPU type "${gpu.type}". Known types: ${KNOWN_GPU_TYPES.join(", ")}`,
      {
        known: [...KNOWN_GPU_TYPES],
      },
    );
  }
  return { type, count: gpu.count };
}

export async function submitRun(
  ctx: AppContext,
  principal: Principal,
  notebookId: string,
  request: RunRequest,
): Promise<Job> {
  const { orgId } = principal;
  const notebook = await getNotebook(ctx, orgId, notebookId);
  const parameters = validateParameters(request.parameters ?? {});
  const gpu = resolveGpu(request.gpu);
  if (request.strategy && !gpu) {
    throw badRequest(
      "strategy_needs_gpu",
      `A launch strategy ("${request.strategy}") applies to runs on a cloud GPU; this run asks for no GPU`,
    );
  }
  const datasets = await resolveDatasets(ctx, orgId, [...new Set(request.datasets ?? [])]);
  const backoffMinMs = (request.backoff_min_s ?? DEFAULT_RETRY_POLICY.backoffMinMs / 1000) * 1000;
  const backoffMaxMs = (request.backoff_max_s ?? DEFAULT_RETRY_POLICY.backoffMaxMs / 1000) * 1000;
  if (backoffMaxMs < backoffMinMs) {
    throw badRequest("invalid_backoff", "backoff_max_s must be at least backoff_min_s");
  }
  const id = newId("run");
  const timeoutMs = (request.timeout_s ?? ctx.config.defaultTimeoutS) * 1000;
  // The hold is the most the run can cost: its price for its whole timeout.
  await holdCredits(ctx, principal, id, await estimate(ctx, { gpu }, timeoutMs / 1000));
  const now = ctx.now();
  const spec: NotebookRunSpec = {
    notebook_id: notebook.id,
    notebook_name: notebook.name,
    datasets: datasets.map((d) => d.id),
    parameters,
    gpu,
    strategy: request.strategy ?? null,
  };
  // The run's input area: a frozen copy of the notebook and the spec the instance receives.
  const area = runArea(id);
  const notebookBytes = await ctx.blobs.get(notebook.blobKey);
  await ctx.blobs.put(`${area}/notebook.ipynb`, notebookBytes);
  await ctx.blobs.put(`${area}/input.json`, Buffer.from(JSON.stringify({ run_id: id, ...spec }, null, 2)));
  try {
    const job = await ctx.store.enqueue({
      id,
      orgId,
      kind: "notebook",
      notebookId: notebook.id,
      spec,
      priority: request.priority ?? (await defaultPriority(ctx, orgId)),
      maxAttempts: request.max_attempts ?? DEFAULT_RETRY_POLICY.maxAttempts,
      backoffMinMs,
      backoffMaxMs,
      timeoutMs,
      runAt: now,
      createdAt: now,
      gpu,
      strategy: spec.strategy,
      userId: principal.userId,
    });
    ctx.events.emit("work");
    return job;
  } catch (error) {
    // The hold of a run that was never stored is released by the billing loop.
    await ctx.blobs.delete(`${area}/`);
    throw error;
  }
}

export async function getRun(ctx: AppContext, orgId: string, runId: string): Promise<Job> {
  const job = await ctx.store.getJob(orgId, runId);
  // Predictions are jobs too, but not notebook runs: they answer under /jobs.
  if (job?.kind !== "notebook")
    throw notFound("run_not_found", `Run ${runId} does not exist`, { run_id: runId });
  return job;
}

export async function cancelRun(ctx: AppContext, orgId: string, runId: string): Promise<Job> {
  const current = await getRun(ctx, orgId, runId);
  if (!canCancel(current.status)) {
    throw conflict(
      "run_finished",
      `Run ${runId} already ${current.status}; only queued or running runs can be cancelled`,
      {
        status: current.status,
      },
    );
  }
  const job = (await ctx.store.requestCancel(orgId, runId, ctx.now()))!;
  if (job.status === "cancelled") await writeRunLog(ctx, job);
  ctx.events.emit(`job:${runId}`);
  return job;
}

export interface DownloadLink {
  path: string;
  size: number;
  url: string;
}

export async function downloadLinks(ctx: AppContext, orgId: string, runId: string) {
  const job = await getRun(ctx, orgId, runId);
  const area = runArea(job.id);
  const ttl = ctx.config.signedUrlTtlS;
  const link = async (key: string, path: string, size: number): Promise<DownloadLink> => ({
    path,
    size,
    url: await ctx.blobs.signedUrl(key, "GET", ttl),
  });
  const executed = await ctx.blobs.stat(`${area}/executed.ipynb`);
  const log = await ctx.blobs.stat(`${area}/logs.txt`);
  const outputs = await ctx.blobs.list(`${area}/output/`);
  return {
    run_id: job.id,
    status: job.status,
    expires_at: new Date(ctx.now() + ttl * 1000).toISOString(),
    executed_notebook: executed ? await link(executed.key, "executed.ipynb", executed.size) : null,
    log: log ? await link(log.key, "logs.txt", log.size) : null,
    outputs: await Promise.all(
      outputs.map((o) => link(o.key, o.key.slice(`${area}/output/`.length), o.size)),
    ),
  };
}

/** The run's log as one text file in its area, written when the run ends. */
export async function writeRunLog(ctx: AppContext, job: Job): Promise<void> {
  const lines: string[] = [];
  let cursor = { attempt: 0, seq: 0 };
  for (;;) {
    const page = await ctx.store.readLogs(job.orgId, job.id, cursor, 5000);
    if (page.length === 0) break;
    for (const entry of page) lines.push(entry.text);
    const last = page[page.length - 1]!;
    cursor = { attempt: last.attempt, seq: last.seq };
  }
  await ctx.blobs.put(`${runArea(job.id)}/logs.txt`, Buffer.from(lines.join("")));
}
