import type { PredictionJobSpec, PredictionTargetSpec } from "../app/predictions.ts";
import type { NotebookRunSpec } from "../app/runs.ts";
import { type Batch, etaSeconds, isBatchFinished, statisticsFromSums } from "../domain/batch.ts";
import type { Instance } from "../domain/instance.ts";
import { isTerminal, type Job } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import { type LaunchAttempt, type MachineRecord, outcomeOf } from "../domain/machines.ts";
import type { MarketPoint, MarketRow, Offer, PriceSummary } from "../domain/offers.ts";
import type { DatasetRecord, NotebookRecord } from "../store/store.ts";

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function notebookView(n: NotebookRecord) {
  return { id: n.id, name: n.name, size: n.size, cells: n.cellCount, created_at: iso(n.createdAt) };
}

export function datasetView(d: DatasetRecord) {
  return {
    id: d.id,
    name: d.name,
    total_size: d.totalSize,
    files: d.files.map((f) => ({ path: f.path, size: f.size })),
    created_at: iso(d.createdAt),
  };
}

/** Where the attempt runs, in words that say so plainly when it is not what was asked for. */
function instanceView(job: Job, spec: NotebookRunSpec) {
  if (!job.compute) return null;
  const gpus = (job.compute.gpus as JsonObject[] | undefined) ?? [];
  const requested = spec.gpu ? `requested ${spec.gpu.count}× ${spec.gpu.type}, but ` : "";
  let note: string;
  if (gpus.length === 0) {
    note = spec.gpu ? `${requested}the instance has no GPU: running on CPU` : "running on CPU";
  } else {
    const where = `running on GPU ${gpus.map((g) => `${g.index} (${g.name})`).join(", ")}`;
    const matches =
      !spec.gpu ||
      (gpus.length >= spec.gpu.count &&
        // Driver names read "NVIDIA A100-SXM4-80GB": the model (the part before any "-") must appear.
        gpus.every((g) => String(g.name).toUpperCase().includes(spec.gpu!.type.split("-")[0]!)));
    note = matches ? where : `${requested}${where}`;
  }
  return { ...job.compute, note };
}

export function runView(job: Job) {
  const spec = job.spec as NotebookRunSpec;
  return {
    id: job.id,
    notebook_id: job.notebookId,
    status: job.status,
    priority: job.priority,
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    timeout_s: Math.round(job.timeoutMs / 1000),
    parameters: spec.parameters,
    datasets: spec.datasets,
    gpu: spec.gpu,
    // Runs stored before strategies could be chosen have none in their spec.
    strategy: spec.strategy ?? null,
    cancel_requested: job.cancelRequested,
    created_at: iso(job.createdAt),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    next_attempt_at: job.status === "queued" && job.attempts > 0 ? iso(job.runAt) : null,
    // A finished run's last phase ("uploading outputs") is stale; its status says how it ended.
    progress: job.progress && isTerminal(job.status) ? { ...job.progress, phase: job.status } : job.progress,
    instance: instanceView(job, spec),
    error: job.error
      ? { code: job.error.code, message: job.error.message, details: job.error.details ?? null }
      : null,
  };
}

/** A prediction job: one ligand, alone or in a batch. */
export function predictionView(job: Job) {
  const spec = job.spec as unknown as PredictionJobSpec;
  return {
    id: job.id,
    batch_id: job.batchId,
    model: spec.model,
    ligand: {
      name: spec.ligand.name,
      smiles: spec.ligand.smiles,
      input_smiles: spec.ligand.input_smiles,
      fragments_dropped: spec.ligand.fragments_dropped,
    },
    status: job.status,
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    priority: job.priority,
    created_at: iso(job.createdAt),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    result: job.result,
    error: job.error ? { code: job.error.code, message: job.error.message } : null,
    instance: job.compute,
  };
}

export function batchView(batch: Batch, now: number) {
  const { counters } = batch;
  const stats = statisticsFromSums(batch.scoreCount, batch.scoreSum, batch.scoreSquareSum);
  const spec = batch.spec as unknown as PredictionTargetSpec & { skipped?: number; rejection?: JsonObject };
  return {
    id: batch.id,
    name: batch.name,
    model: batch.model,
    model_version: batch.modelVersion,
    status: batch.status,
    priority: batch.priority,
    max_concurrent: batch.maxConcurrent,
    progress: {
      total: counters.total,
      pending: counters.pending,
      running: counters.running,
      completed: counters.completed,
      failed: counters.failed,
      cancelled: counters.cancelled,
    },
    score: {
      name: batch.scoreName,
      unit: batch.scoreUnit,
      better: batch.scoreBetter,
      best: batch.bestScore,
      best_job_id: batch.bestJobId,
      mean: stats.mean,
      std: stats.std,
    },
    eta_s: isBatchFinished(batch.status) ? 0 : etaSeconds(counters, batch.startedAt, now),
    target: spec.target
      ? {
          receptor: spec.target.receptor
            ? { dataset_id: spec.target.receptor.dataset_id, path: spec.target.receptor.path }
            : null,
          protein_sequence: spec.target.protein_sequence,
        }
      : null,
    parameters: spec.parameters,
    skipped_invalid: spec.skipped ?? 0,
    // A batch checked in the background and rejected: the same listing a 422 would have carried.
    error: spec.rejection ?? null,
    cancel_requested: batch.cancelRequested,
    created_at: iso(batch.createdAt),
    started_at: iso(batch.startedAt),
    finished_at: iso(batch.finishedAt),
  };
}

export function offerView(offer: Offer, now: number) {
  return {
    provider: offer.provider,
    id: offer.id,
    gpu: offer.gpu,
    gpu_count: offer.gpuCount,
    gpu_memory_gb: offer.gpuMemoryGb,
    vcpus: offer.vcpus,
    memory_gb: offer.memoryGb,
    region: offer.region,
    spot: offer.spot,
    price_per_hour: offer.pricePerHour,
    reliability: offer.reliability,
    fetched_at: iso(offer.fetchedAt),
    age_s: Math.max(0, Math.round((now - offer.fetchedAt) / 1000)),
  };
}

const priceView = (summary: PriceSummary | null) =>
  summary && { offers: summary.offers, min: summary.min, median: summary.median, p90: summary.p90 };

export function marketRowView(row: MarketRow) {
  return {
    gpu: row.gpu,
    on_demand: priceView(row.onDemand),
    spot: priceView(row.spot),
    providers: row.providers,
  };
}

export function marketPointView(point: MarketPoint) {
  return { taken_at: iso(point.takenAt), spot: point.spot, ...priceView(point.prices) };
}

export function machineView(record: MachineRecord) {
  return {
    provider: record.provider,
    machine_id: record.machineId,
    attempts: record.attempts,
    ready: record.ready,
    failed: record.failed,
    pending: record.pending,
    success_rate: record.successRate,
    median_time_to_ready_s: record.medianTimeToReadyMs === null ? null : record.medianTimeToReadyMs / 1000,
    last_attempt_at: iso(record.lastAttemptAt),
    last_error: record.lastError,
    skipped_until: iso(record.skippedUntil),
  };
}

export function computeInstanceView(instance: Instance, now: number) {
  return {
    id: instance.id,
    provider: instance.provider,
    provider_instance_id: instance.providerInstanceId,
    state: instance.state,
    gpus: instance.gpus.map((g) => ({ index: g.index, name: g.name, memory_mib: g.memoryMiB })),
    machine_id: instance.machineId,
    price_per_hour: instance.pricePerHour,
    created_at: iso(instance.createdAt),
    ready_at: iso(instance.readyAt),
    age_s: Math.round(((instance.terminatedAt ?? now) - instance.createdAt) / 1000),
    terminated_at: iso(instance.terminatedAt),
    termination_reason: instance.terminationReason,
  };
}

export function launchAttemptView(attempt: LaunchAttempt) {
  return {
    instance_id: attempt.instanceId,
    provider: attempt.provider,
    machine_id: attempt.machineId,
    price_per_hour: attempt.pricePerHour,
    outcome: outcomeOf(attempt),
    launched_at: iso(attempt.launchedAt),
    ready_at: iso(attempt.readyAt),
    time_to_ready_s: attempt.readyAt === null ? null : (attempt.readyAt - attempt.launchedAt) / 1000,
    ended_at: iso(attempt.endedAt),
    error: attempt.error,
  };
}
