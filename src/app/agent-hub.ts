import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { assertSafeRelativePath } from "../blob/keys.ts";
import { badRequest, conflict, HangarError, notReady, unauthorized } from "../domain/errors.ts";
import type { Instance } from "../domain/instance.ts";
import { isTerminal, type Job, type JobError, type JobProgress } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import { toMicro, withMarkup } from "../domain/money.ts";
import { placementOf } from "../domain/provisioning.ts";
import type { ModelSpec, PredictionInput } from "../models/model.ts";
import { MODEL_SPECS } from "../models/registry.ts";
import type { FinishOutcome, LeaseRef, LogEntry, QueuedStanding } from "../store/store.ts";
import { generateSecret, hashSecret } from "./api-keys.ts";
import type { AppContext } from "./context.ts";
import type { PredictionJobSpec, PredictionTargetSpec } from "./predictions.ts";
import { type NotebookRunSpec, runArea, writeRunLog } from "./runs.ts";

/** What an agent receives with a claimed notebook run: everything it needs, through signed URLs. */
export interface Assignment {
  kind: "notebook";
  job_id: string;
  lease_token: string;
  attempt: number;
  /** Number this attempt's log lines after this one (lines from before a release are kept). */
  log_seq_after: number;
  timeout_s: number;
  parameters: JsonObject;
  notebook: { name: string; url: string };
  inputs: { path: string; size: number; url: string }[];
}

/** One ligand of a work unit, with the lease of its job. */
export interface PredictionItem {
  job_id: string;
  lease_token: string;
  attempt: number;
  log_seq_after: number;
  input: PredictionInput;
}

/** Where an agent PUTs one output file. */
export interface UploadTarget {
  path: string;
  url: string;
  headers: Readonly<Record<string, string>>;
}

/** Children of one batch (or one single prediction) claimed together: one model, one target. */
export interface PredictionAssignment {
  kind: "predict";
  model: string;
  batch_id: string | null;
  timeout_s: number;
  target: {
    receptor: { name: string; url: string } | null;
    protein_sequence: string | null;
    /** The protein's precomputed MSA (A3M), for models that take one. */
    msa: { name: string; url: string } | null;
  };
  parameters: JsonObject;
  items: PredictionItem[];
}

export type AnyAssignment = Assignment | PredictionAssignment;

/** What an agent tells the control plane when it asks for work. */
export interface AgentCapacity {
  /** Models the agent has runners for (each checks its own install when it runs). */
  models: readonly string[];
  cores: number;
  /** The batch it just worked on: more of it reuses the loaded model and prepared target. */
  preferBatch?: string;
}

/** Children per claim: `perProcess` inputs for each of the processes one instance runs side by side. */
function unitSize(spec: ModelSpec, cores: number): number {
  const parallel = spec.packing.parallel === "cores" ? Math.max(1, cores) : spec.packing.parallel;
  return spec.packing.perProcess * parallel;
}

/** Batch work goes first on a higher priority or, with fair share, when its org runs fewer jobs. */
const standsBefore = (batch: QueuedStanding, single: QueuedStanding, fairShare: boolean) =>
  batch.priority > single.priority ||
  (fairShare && batch.priority === single.priority && batch.orgRunning < single.orgRunning);

const leaseLost = (jobId: string) =>
  conflict(
    "lease_lost",
    `This instance no longer holds job ${jobId} (it was cancelled, timed out or reassigned)`,
  );

const withoutNul = (text: string) => text.replaceAll("\0", "\uFFFD");

/** A log entry as stored: PostgreSQL text cannot hold NUL, and a notebook may well print one. */
const cleanLogEntry = (entry: Omit<LogEntry, "attempt">, attempt: number): LogEntry => ({
  ...entry,
  attempt,
  stream: withoutNul(entry.stream),
  text: withoutNul(entry.text),
});

/** One attempt an agent ends, with the log entries it had not shipped yet. */
export interface AgentFinish {
  lease: LeaseRef;
  outcome: FinishOutcome;
  logs?: { attempt: number; entries: Omit<LogEntry, "attempt">[] };
}

/** Per item of a batched finish: the job's status now, or why it could not be ended. */
export type FinishAnswer = { job_id: string; status: string } | { job_id: string; error: "lease_lost" };

/** The control plane's side of the agent protocol. Agents always call in; nothing calls out to them. */
export class AgentHub {
  readonly #ctx: AppContext;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  async register(instanceId: string, bootstrapToken: string): Promise<{ agentToken: string }> {
    const [instance] = await this.#ctx.store.listInstances({ ids: [instanceId] });
    // A machine can boot before its launch is recorded, and never have it recorded when the control
    // plane restarted between the provider's create and the record: with no price and no provider
    // id, its work would be charged nothing. Its agent retries (a 5xx) until the launch is recorded;
    // otherwise the boot timeout ends the record and the reconciler the machine.
    if (instance?.state === "provisioning" && instance.providerInstanceId === null)
      throw notReady("launch_not_recorded", `The launch of ${instanceId} is not recorded yet; retry`);
    const agentToken = generateSecret("hga_");
    const ok = await this.#ctx.store.registerInstance(
      instanceId,
      hashSecret(bootstrapToken),
      hashSecret(agentToken),
      this.#ctx.now(),
    );
    if (!ok) throw unauthorized("Unknown instance, or its bootstrap token was already used");
    this.#ctx.log.info({ instance_id: instanceId }, "agent registered");
    return { agentToken };
  }

  async authenticate(agentToken: string | undefined): Promise<Instance> {
    if (!agentToken) throw unauthorized("Missing agent token");
    const instance = await this.#ctx.store.findInstanceByAgentToken(hashSecret(agentToken));
    if (!instance)
      throw new HangarError(410, "instance_terminated", "This instance is terminated or unknown");
    await this.#ctx.store.touchInstance(instance.id, this.#ctx.now());
    return instance;
  }

  /**
   * Long poll: waits up to `waitMs` for work; null when none came. Work is one notebook run, or a
   * unit of predictions: a single one, or children of one batch packed for the instance's model.
   */
  async claim(
    instance: Instance,
    waitMs: number,
    signal: AbortSignal,
    capacity: AgentCapacity,
  ): Promise<AnyAssignment | null> {
    const { store } = this.#ctx;
    const deadline = this.#ctx.now() + waitMs;
    // An agent runs one unit at a time, so one asking for work holds none: an instance left busy by a
    // job that ended without it (reaped, cancelled, lease lost) becomes idle again here.
    if (instance.state === "busy")
      await store.transitionInstance(instance.id, ["busy"], "idle", this.#ctx.now());
    if (this.#ctx.draining) {
      // No new work while draining; holding the poll keeps idle agents from spinning on 204s.
      await sleep(Math.min(waitMs, 5_000), undefined, { signal }).catch(() => undefined);
      return null;
    }
    while (!this.#ctx.draining && !signal.aborted) {
      const now = this.#ctx.now();
      const claimed = await this.#claimOnce(instance, capacity, now);
      if (claimed.length > 0) {
        if (!(await store.transitionInstance(instance.id, ["ready", "idle"], "busy", now))) {
          // The instance was terminated meanwhile: the jobs go back untouched, the agent learns on its next call.
          for (const job of claimed) {
            const released = await store.release({ jobId: job.id, leaseToken: job.leaseToken! }, now);
            if (released) await this.announceJobChange(released);
          }
          return null;
        }
        for (const job of claimed) {
          this.#ctx.metrics.queueWait.observe(Math.max(0, now - job.runAt) / 1000);
          this.#ctx.events.emit(`job:${job.id}`);
        }
        if (claimed[0]!.batchId) this.#ctx.events.emit(`batch:${claimed[0]!.batchId}`);
        return claimed[0]!.kind === "notebook"
          ? this.#assignment(claimed[0]!)
          : this.#predictionUnit(claimed);
      }
      const remaining = deadline - now;
      if (remaining <= 0) return null;
      // Enqueues in this process wake us at once; other processes' enqueues are seen on the next poll.
      await once(this.#ctx.events, "work", {
        signal: AbortSignal.any([signal, AbortSignal.timeout(Math.min(remaining, 250))]),
      }).catch(() => undefined);
    }
    return null;
  }

  /**
   * One claim attempt: the batch the instance is already working on (its model is loaded), else
   * whichever waits with the better priority — a job outside batches, or a batch's children.
   */
  async #claimOnce(instance: Instance, capacity: AgentCapacity, now: number): Promise<Job[]> {
    const { store, config } = this.#ctx;
    const compute = {
      instance_id: instance.id,
      provider: instance.provider,
      gpus: instance.gpus.map((g) => ({ index: g.index, name: g.name, memory_mib: g.memoryMiB })),
      // Billing terms fixed at the claim: the instance's price as launched (with markup), and how many
      // runs share it (domain/usage.ts).
      price_micro_per_hour: withMarkup(toMicro(instance.pricePerHour ?? 0), config.priceMarkupPercent),
      share: 1,
    };
    const fairShare = config.fairShare;
    const provider = this.#ctx.providers.find((p) => p.name === instance.provider);
    const placement = placementOf(instance, {
      onThisHost: provider?.capabilities.launchesOffers !== true,
      cloudsLaunchGpus: this.#ctx.providers.some((p) => p.capabilities.launchesOffers && p.capabilities.gpus),
    });
    // Batches run on this host's instances; a cloud instance was launched for one GPU shape.
    const models = placement.cpuJobs ? capacity.models.filter((name) => MODEL_SPECS.has(name)) : [];
    const preferred = capacity.preferBatch;
    const batchClaim = (only?: string) =>
      store.claimBatchChildren({
        owner: instance.id,
        models,
        limitFor: (model) => unitSize(MODEL_SPECS.get(model)!, capacity.cores),
        leaseMs: config.leaseS * 1000,
        now,
        compute,
        fairShare,
        ...(only ? { batchId: only } : preferred ? { preferBatchId: preferred } : {}),
      });
    // Staying on the batch whose model is loaded saves reloading it; under fair share it is only
    // preferred among work of equal standing, so another org's work is not starved by it.
    if (preferred && !fairShare) {
      const same = await batchClaim(preferred);
      if (same) return same.jobs;
    }
    const top = await store.topQueued(now, fairShare);
    if (top.batch !== null && (top.single === null || standsBefore(top.batch, top.single, fairShare))) {
      const children = await batchClaim();
      if (children) return children.jobs;
    }
    const single = await store.claim({
      owner: instance.id,
      limit: 1,
      leaseMs: config.leaseS * 1000,
      now,
      compute,
      fairShare,
      placement,
    });
    if (single.length > 0 || top.batch === null) return single;
    return (await batchClaim())?.jobs ?? [];
  }

  async #predictionUnit(jobs: Job[]): Promise<PredictionAssignment> {
    const { store, blobs, config } = this.#ctx;
    const first = jobs[0]!;
    const batch = first.batchId ? await store.getBatch(first.orgId, first.batchId) : null;
    const spec = (batch?.spec ?? first.spec) as unknown as PredictionTargetSpec;
    const ttl = Math.max(config.signedUrlTtlS, Math.ceil(first.timeoutMs / 1000));
    const items: PredictionItem[] = [];
    const logSeqs = await store.lastLogSeqs(jobs.map((job) => ({ jobId: job.id, attempt: job.attempts })));
    for (const job of jobs) {
      if (job.attempts > 1) await blobs.delete(`${runArea(job.id)}/output/`);
      const ligand = (job.spec as unknown as PredictionJobSpec).ligand;
      items.push({
        job_id: job.id,
        lease_token: job.leaseToken!,
        attempt: job.attempts,
        log_seq_after: logSeqs.get(job.id) ?? 0,
        input: { id: ligand.input_id, name: ligand.name, smiles: ligand.smiles },
      });
    }
    const { receptor, msa } = spec.target;
    return {
      kind: "predict",
      model: spec.model,
      batch_id: first.batchId,
      timeout_s: Math.ceil(first.timeoutMs / 1000),
      target: {
        receptor: receptor
          ? { name: receptor.path, url: await blobs.signedUrl(receptor.blob_key, "GET", ttl) }
          : null,
        protein_sequence: spec.target.protein_sequence,
        // Specs stored before MSAs could be given have no `msa` at all.
        msa: msa ? { name: msa.path, url: await blobs.signedUrl(msa.blob_key, "GET", ttl) } : null,
      },
      parameters: spec.parameters,
      items,
    };
  }

  /** Heartbeats for every job of a work unit in one call. */
  async heartbeats(leases: LeaseRef[]): Promise<{ cancel: string[]; lost: string[] }> {
    const now = this.#ctx.now();
    const answer = { cancel: [] as string[], lost: [] as string[] };
    const results = await this.#ctx.store.heartbeatMany(leases, now, this.#ctx.config.leaseS * 1000);
    for (const [jobId, result] of results) {
      if (!result.held) answer.lost.push(jobId);
      else if (result.cancelRequested) answer.cancel.push(jobId);
    }
    return answer;
  }

  async #assignment(job: Job): Promise<Assignment> {
    const { blobs, store, config } = this.#ctx;
    if (job.attempts > 1) {
      // A retry starts from a clean output area: an earlier attempt's files must not pass for this one's.
      await blobs.delete(`${runArea(job.id)}/output/`);
      await blobs.delete(`${runArea(job.id)}/executed.ipynb`);
    }
    const spec = job.spec as NotebookRunSpec;
    const ttl = Math.max(config.signedUrlTtlS, Math.ceil(job.timeoutMs / 1000));
    const inputs: Assignment["inputs"] = [];
    for (const datasetId of spec.datasets) {
      const dataset = await store.getDataset(job.orgId, datasetId);
      for (const file of dataset?.files ?? []) {
        inputs.push({
          path: file.path,
          size: file.size,
          url: await blobs.signedUrl(file.blobKey, "GET", ttl),
        });
      }
    }
    return {
      kind: "notebook",
      job_id: job.id,
      lease_token: job.leaseToken!,
      attempt: job.attempts,
      log_seq_after: (await store.lastLogSeqs([{ jobId: job.id, attempt: job.attempts }])).get(job.id) ?? 0,
      timeout_s: Math.ceil(job.timeoutMs / 1000),
      parameters: spec.parameters,
      notebook: {
        name: spec.notebook_name,
        url: await blobs.signedUrl(`${runArea(job.id)}/notebook.ipynb`, "GET", ttl),
      },
      inputs,
    };
  }

  async heartbeat(lease: LeaseRef, progress: JobProgress | undefined): Promise<{ cancel: boolean }> {
    const { config } = this.#ctx;
    const result = await this.#ctx.store.heartbeat(lease, this.#ctx.now(), config.leaseS * 1000, progress);
    if (!result.held) throw leaseLost(lease.jobId);
    if (progress) this.#ctx.events.emit(`job:${lease.jobId}`);
    return { cancel: result.cancelRequested };
  }

  /** Stores an agent's log lines for all its attempts at once; answers the attempts whose lease is lost. */
  async appendLogs(
    items: readonly { lease: LeaseRef; attempt: number; entries: Omit<LogEntry, "attempt">[] }[],
  ): Promise<{ lost: string[] }> {
    const lost = await this.#ctx.store.appendLeasedLogs(
      items.map(({ lease, attempt, entries }) => ({
        lease,
        entries: entries.map((e) => cleanLogEntry(e, attempt)),
      })),
    );
    const gone = new Set(lost);
    for (const { lease, entries } of items) {
      if (entries.length > 0 && !gone.has(lease.jobId)) this.#ctx.events.emit(`log:${lease.jobId}`);
    }
    return { lost };
  }

  /**
   * Signed PUT URLs for `executed.ipynb` and files under `output/`; nothing else in the run area.
   * Each comes with the headers the store needs on the PUT.
   */
  async uploadUrls(lease: LeaseRef, paths: string[]): Promise<UploadTarget[]> {
    const job = await this.#ctx.store.getLeasedJob(lease);
    if (job?.status !== "running") throw leaseLost(lease.jobId);
    const area = runArea(job.id);
    return Promise.all(
      paths.map(async (path) => {
        if (path !== "executed.ipynb" && !path.startsWith("output/")) {
          throw badRequest(
            "invalid_upload_path",
            `Agents may upload executed.ipynb or output/…, not "${path}"`,
          );
        }
        const safe = assertSafeRelativePath(path);
        return {
          path,
          url: await this.#ctx.blobs.signedUrl(`${area}/${safe}`, "PUT", this.#ctx.config.signedUrlTtlS),
          headers: this.#ctx.blobs.capabilities.signedPutHeaders,
        };
      }),
    );
  }

  /** Hands a job back to the queue without spending an attempt, and frees the instance. */
  async release(instance: Instance, lease: LeaseRef): Promise<boolean> {
    const now = this.#ctx.now();
    const job = await this.#ctx.store.release(lease, now);
    await this.#ctx.store.transitionInstance(instance.id, ["busy"], "idle", now);
    if (job) await this.announceJobChange(job);
    return job !== null;
  }

  /**
   * Wake-ups for a job that changed hands: back in the queue, or ended. An ended job outside a batch
   * gets its run log file now; a batch child's is written when first downloaded, so a screen's
   * children do not each cost a file write as they end.
   */
  async announceJobChange(job: Job): Promise<void> {
    if (!isTerminal(job.status)) this.#ctx.events.emit("work");
    else if (job.batchId === null) await writeRunLog(this.#ctx, job);
    this.#ctx.events.emit(`job:${job.id}`);
    if (job.batchId) this.#ctx.events.emit(`batch:${job.batchId}`);
  }

  async finish(instance: Instance, lease: LeaseRef, outcome: FinishOutcome): Promise<Job> {
    const { store } = this.#ctx;
    const now = this.#ctx.now();
    const job = await store.finish(lease, outcome, now);
    if (!job) throw leaseLost(lease.jobId);
    await store.transitionInstance(instance.id, ["busy"], "idle", now);
    await this.recordAttemptEnd(job, outcome.status === "succeeded" ? null : (outcome.error ?? null), now);
    return job;
  }

  /**
   * Ends several attempts of this instance in one transaction, each with the log entries its agent
   * had left to ship: a packed unit reports its children in one call. A lost lease answers
   * `lease_lost` for that item alone.
   */
  async finishMany(instance: Instance, items: readonly AgentFinish[]): Promise<FinishAnswer[]> {
    const { store } = this.#ctx;
    const now = this.#ctx.now();
    const jobs = await store.finishMany(
      items.map((item) => ({
        lease: item.lease,
        outcome: item.outcome,
        ...(item.logs ? { logs: item.logs.entries.map((e) => cleanLogEntry(e, item.logs!.attempt)) } : {}),
      })),
      now,
    );
    if (jobs.some((job) => job !== null)) {
      await store.transitionInstance(instance.id, ["busy"], "idle", now);
    }
    const answers: FinishAnswer[] = [];
    for (const [i, job] of jobs.entries()) {
      const { lease, outcome } = items[i]!;
      if (!job) {
        answers.push({ job_id: lease.jobId, error: "lease_lost" });
        continue;
      }
      if (items[i]!.logs) this.#ctx.events.emit(`log:${job.id}`);
      await this.recordAttemptEnd(job, outcome.status === "succeeded" ? null : (outcome.error ?? null), now);
      answers.push({ job_id: job.id, status: job.status });
    }
    return answers;
  }

  /** Metrics, the run's log file and wake-ups for one ended attempt, however it ended. */
  async recordAttemptEnd(job: Job, error: JobError | null, now: number): Promise<void> {
    const { metrics } = this.#ctx;
    if (job.startedAt !== null) {
      const status = isTerminal(job.status) ? job.status : "retried";
      metrics.runDuration.observe({ status }, (now - job.startedAt) / 1000);
    }
    if (error) metrics.failures.inc({ code: error.code });
    await this.announceJobChange(job);
  }
}
