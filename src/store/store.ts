import type { Batch, ReadyWork } from "../domain/batch.ts";
import type { Instance, InstanceState } from "../domain/instance.ts";
import type { Job, JobError, JobProgress, JobStatus } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { LaunchAttempt, LaunchedInstance } from "../domain/machines.ts";
import type { MarketPoint } from "../domain/offers.ts";
import type { GpuRequirement, Placement, ProvisioningStrategy } from "../domain/provisioning.ts";
import type { AccountStore, LedgerStore } from "./accounts.ts";

export interface StoreCapabilities {
  /** Claims lock rows with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other. */
  readonly skipLocked: boolean;
  /** Several server processes may share this store (PostgreSQL); SQLite is one host only. */
  readonly multiHost: boolean;
  /** Tables live in a named schema (PostgreSQL); migrations must look for their bookkeeping there. */
  readonly namedSchemas: boolean;
}

export interface NotebookRecord {
  id: string;
  orgId: string;
  name: string;
  size: number;
  cellCount: number;
  blobKey: string;
  createdAt: number;
}

export interface DatasetFileRecord {
  path: string;
  size: number;
  blobKey: string;
}

export interface DatasetRecord {
  id: string;
  orgId: string;
  name: string;
  totalSize: number;
  files: DatasetFileRecord[];
  createdAt: number;
}

export interface NewJob {
  id: string;
  orgId: string;
  kind: Job["kind"];
  notebookId: string | null;
  spec: JsonObject;
  priority: number;
  maxAttempts: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
  runAt: number;
  createdAt: number;
  /** GPUs the job needs; absent or null for none. */
  gpu?: GpuRequirement | null;
  /** How its instance is launched; absent or null: the deployment's default. */
  strategy?: ProvisioningStrategy | null;
  /** Who submitted it. */
  userId?: string | null;
}

export interface ClaimRequest {
  /** Who holds the lease: an instance id (agents) or a worker name (benchmarks, tests). */
  owner: string;
  limit: number;
  leaseMs: number;
  now: number;
  /** Recorded on the job as where this attempt runs. */
  compute?: JsonObject;
  /** Absent: any job (workers in benchmarks and tests). */
  placement?: Placement;
  /**
   * Among equal priorities, take the work of the org with the fewest jobs running (when several
   * orgs exist). Orgs' concurrency limits hold either way.
   */
  fairShare?: boolean;
}

/** Where the best waiting work stands: its priority, and how many jobs its org already runs. */
export interface QueuedStanding {
  priority: number;
  orgRunning: number;
}

export interface LeaseRef {
  jobId: string;
  leaseToken: string;
}

export type HeartbeatResult = { held: true; cancelRequested: boolean } | { held: false };

/** A cloud credential of an org as stored: sealed, with the last characters of its key as a hint. */
export interface SealedCredential {
  orgId: string;
  provider: string;
  ciphertext: string;
  iv: string;
  tag: string;
  keyHint: string;
  updatedAt: number;
}

/** One attempt to end, with the log entries its agent had not shipped yet. */
export interface FinishItem {
  lease: LeaseRef;
  outcome: FinishOutcome;
  logs?: LogEntry[];
}

export type FinishOutcome =
  | { status: "succeeded"; result?: JsonObject; score?: number }
  | { status: "cancelled"; error?: JobError }
  | { status: "failed"; error: JobError; result?: JsonObject };

export interface NewBatch {
  id: string;
  orgId: string;
  name: string;
  model: string;
  modelVersion: string;
  priority: number;
  maxConcurrent: number;
  score: { name: string; unit: string; better: "lower" | "higher" };
  spec: JsonObject;
  createdAt: number;
  /** Who submitted it. */
  userId?: string | null;
}

/** One child of a new batch: its spec, or a submit-time failure (an invalid row with skip_invalid). */
export interface NewBatchChild {
  id: string;
  spec: JsonObject;
  failure?: JobError;
}

export interface BatchChildPolicy {
  maxAttempts: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
}

export interface BatchClaimRequest extends Omit<ClaimRequest, "limit"> {
  /** Only this batch (the instance has its model loaded); otherwise the best batch. */
  batchId?: string;
  /** Among batches of equal standing, this one first (keeps a loaded model busy under fair share). */
  preferBatchId?: string;
  /** Models this instance can run; batches of other models are left to other instances. */
  models: readonly string[];
  /** How many children of a batch of `model` to take at once (its packing on this instance). */
  limitFor: (model: string) => number;
}

export interface LogEntry {
  attempt: number;
  seq: number;
  ts: number;
  stream: string;
  text: string;
}

export interface NewInstance {
  id: string;
  orgId: string;
  provider: string;
  gpus: Instance["gpus"];
  bootstrapTokenHash: string;
  createdAt: number;
}

export interface ListJobsQuery {
  orgId: string;
  notebookId?: string;
  kind?: Job["kind"];
  limit: number;
}

/** How often a running batch's artifacts are rewritten: at least `minMs` apart, more for big batches. */
export interface ArtifactRefresh {
  minMs: number;
  /** Rewriting reads every child, so the spacing also grows by this much per child. */
  perChildMs: number;
}

export interface ListChildrenQuery {
  orgId: string;
  batchId: string;
  status?: JobStatus;
  /** Children after this id (the previous page's last). */
  after?: string;
  limit: number;
}

/**
 * The persistence port. Everything a user owns is scoped by `orgId`; agent-side calls are scoped by
 * the lease token they hold instead, so a stale agent cannot touch a job that moved on.
 */
export interface Store {
  readonly dialect: string;
  readonly capabilities: StoreCapabilities;
  migrate(): Promise<void>;
  close(): Promise<void>;

  /** Users, orgs, memberships, keys, sessions, invitations. */
  readonly accounts: AccountStore;
  /** Credits, usage and budgets. */
  readonly ledger: LedgerStore;

  insertNotebook(notebook: NotebookRecord): Promise<void>;
  getNotebook(orgId: string, id: string): Promise<NotebookRecord | null>;
  listNotebooks(orgId: string, limit: number): Promise<NotebookRecord[]>;

  insertDataset(dataset: DatasetRecord): Promise<void>;
  getDataset(orgId: string, id: string): Promise<DatasetRecord | null>;
  listDatasets(orgId: string, limit: number): Promise<DatasetRecord[]>;

  enqueue(job: NewJob): Promise<Job>;
  getJob(orgId: string, id: string): Promise<Job | null>;
  /** For agents: the job behind a lease, whatever org it belongs to. */
  getLeasedJob(lease: LeaseRef): Promise<Job | null>;
  listJobs(query: ListJobsQuery): Promise<Job[]>;
  claim(request: ClaimRequest): Promise<Job[]>;
  heartbeat(lease: LeaseRef, now: number, leaseMs: number, progress?: JobProgress): Promise<HeartbeatResult>;
  /** A packed unit's heartbeat: extends every lease still held in one statement; results by job id. */
  heartbeatMany(
    leases: readonly LeaseRef[],
    now: number,
    leaseMs: number,
  ): Promise<Map<string, HeartbeatResult>>;
  /** Ends the attempt; a failure goes back to the queue or fails for good per the job's retry policy. */
  finish(lease: LeaseRef, outcome: FinishOutcome, now: number): Promise<Job | null>;
  /**
   * `finish` for several leases in one transaction (a packed unit's children), each with the log
   * entries it had left to ship; batch counters move once per batch. Null where a lease was lost.
   */
  finishMany(items: readonly FinishItem[], now: number): Promise<(Job | null)[]>;
  /**
   * Gives the job back without spending an attempt (graceful shutdown of its worker), or cancels it
   * when a cancel was requested meanwhile. Null when the lease was no longer held.
   */
  release(lease: LeaseRef, now: number): Promise<Job | null>;
  /** `release` for every job `owner` holds (its instance is being shut down). */
  releaseHeldBy(owner: string, now: number): Promise<Job[]>;
  /** Queued jobs are cancelled at once; running ones are flagged and their agent stops them. */
  requestCancel(orgId: string, id: string, now: number): Promise<Job | null>;
  /**
   * `requestCancel` for all the work of an org (or of one user in it), batches included, recording
   * `reason` as each job's error. Returns the ids of the runs and batches it stopped.
   */
  requestCancelOf(orgId: string, userId: string | null, reason: JobError, now: number): Promise<string[]>;
  /** Running jobs of every org (billing counts what they have used so far). */
  listRunningJobs(limit: number): Promise<Job[]>;
  /**
   * Ends attempts whose lease lapsed, or whose timeout passed more than `timeoutGraceMs` ago (the
   * agent enforces the timeout itself and saves outputs; the grace lets it). Returns the jobs changed.
   */
  reapExpired(now: number, timeoutGraceMs: number): Promise<Job[]>;
  /** Runnable work: queued jobs outside batches, and per batch the children it may start now. */
  readyWork(now: number): Promise<ReadyWork>;

  /** Inserts a batch and all its children in one transaction (failed children already ended). */
  insertBatch(batch: NewBatch, children: NewBatchChild[], policy: BatchChildPolicy): Promise<Batch>;
  /** A batch accepted before its ligands are checked: no children yet, status `validating`. */
  insertValidatingBatch(batch: NewBatch, total: number): Promise<Batch>;
  /** One server takes the check of one validating batch (a lease, taken again when it lapses). */
  claimBatchValidation(now: number, leaseMs: number): Promise<Batch | null>;
  /** Adds checked children to a validating batch (failed ones count as failed at once). */
  appendBatchChildren(batch: Batch, children: NewBatchChild[], policy: BatchChildPolicy): Promise<void>;
  /** Ends the check: the queued children become claimable; `notes` join the batch's spec. */
  openValidatedBatch(batchId: string, notes: JsonObject, now: number): Promise<Batch | null>;
  /** Ends the check with a rejection: children removed, the reason kept in the spec. */
  rejectBatch(batchId: string, rejection: JsonObject, now: number): Promise<Batch | null>;
  getBatch(orgId: string, id: string): Promise<Batch | null>;
  listBatches(orgId: string, limit: number): Promise<Batch[]>;
  listBatchChildren(query: ListChildrenQuery): Promise<Job[]>;
  /**
   * Claims up to `limit` queued children of one batch, never more than its `max_concurrent` running
   * at once; empty when no batch of these models has a child to give.
   */
  claimBatchChildren(request: BatchClaimRequest): Promise<{ batch: Batch; jobs: Job[] } | null>;
  /**
   * The best work waiting outside batches and inside batches (null: none), so claims honour both:
   * its priority and, for fair share, how many jobs its org runs.
   */
  topQueued(
    now: number,
    fairShare: boolean,
  ): Promise<{ single: QueuedStanding | null; batch: QueuedStanding | null }>;
  /** Cancels the batch's queued children at once and flags its running ones. */
  requestBatchCancel(orgId: string, id: string, now: number): Promise<Batch | null>;
  /**
   * Batches whose artifacts should be (re)written: finished since they were last written, or running
   * with artifacts (or, before the first write, a start) older than `refresh` allows. Finished ones first.
   */
  batchesDueForArtifacts(now: number, refresh: ArtifactRefresh, limit: number): Promise<Batch[]>;
  markArtifactsWritten(batchId: string, at: number): Promise<void>;
  countJobsByStatus(): Promise<Record<JobStatus, number>>;

  /**
   * Stores the log lines of running attempts whose lease is still held, an agent's lines for all its
   * attempts at once (each line once by `(attempt, seq)`); answers the job ids whose lease is not held,
   * whose lines are dropped.
   */
  appendLeasedLogs(items: readonly { lease: LeaseRef; entries: LogEntry[] }[]): Promise<string[]>;
  /**
   * The highest `seq` stored for each attempt, by job id; 0 when none. A released job is claimed again
   * under the same attempt number, and its new agent numbers its lines after the ones already there.
   * One statement for a packed unit's attempts.
   */
  lastLogSeqs(attempts: readonly { jobId: string; attempt: number }[]): Promise<Map<string, number>>;
  /** Entries after the cursor `(attempt, seq)`, oldest first. */
  readLogs(
    orgId: string,
    jobId: string,
    after: { attempt: number; seq: number },
    limit: number,
  ): Promise<LogEntry[]>;

  insertInstance(instance: NewInstance): Promise<Instance>;
  findInstanceByAgentToken(hash: string): Promise<Instance | null>;
  /** Exchanges the one-time bootstrap token for an agent token; false when the token was used or wrong. */
  registerInstance(
    id: string,
    bootstrapTokenHash: string,
    agentTokenHash: string,
    now: number,
  ): Promise<boolean>;
  /** What the provider answered to the launch: its instance id, the host, the price it reports. */
  recordLaunch(id: string, launched: LaunchedInstance): Promise<void>;
  /** Launches of an org since `since` (every instance is one), newest first; the machine history reads them. */
  listLaunchAttempts(orgId: string, since: number, provider?: string): Promise<LaunchAttempt[]>;
  /**
   * Moves an instance only if it is in one of `from` and the lifecycle (domain/instance.ts) allows the
   * move; returns whether it moved.
   */
  transitionInstance(
    id: string,
    from: readonly InstanceState[],
    to: InstanceState,
    now: number,
    reason?: string,
  ): Promise<boolean>;
  touchInstance(id: string, now: number): Promise<void>;
  listInstances(filter: {
    /** A user's view is scoped by org; the scheduler's sees every instance. */
    orgId?: string;
    provider?: string;
    states?: readonly InstanceState[];
    ids?: readonly string[];
    /** Instances created at or after this time (epoch ms). */
    since?: number;
  }): Promise<Instance[]>;
  countInstancesByState(): Promise<Record<InstanceState, number>>;

  /** Stores (or replaces) an org's sealed credential for one provider. */
  putCredential(credential: SealedCredential): Promise<void>;
  listCredentials(orgId: string): Promise<SealedCredential[]>;
  /** Whether there was one to delete. */
  deleteCredential(orgId: string, provider: string): Promise<boolean>;

  /** Keeps one market snapshot of an org (its credentials made the offers); drops those before `keepSince`. */
  insertMarketPoints(orgId: string, points: readonly MarketPoint[], keepSince: number): Promise<void>;
  /** An org's market points since `since`, oldest first. */
  listMarketPoints(orgId: string, since: number): Promise<MarketPoint[]>;

  /**
   * Runs one pass of a cluster-wide loop when it is this caller's turn (one caller per `intervalMs`
   * across every server process), and answers whether it ran. On PostgreSQL no other process starts the loop until the pass ends, however
   * long it takes (a pass longer than the interval would otherwise overlap the next replica's), nor
   * waits longer if this process dies mid-pass. SQLite, one host's store, has the gate alone.
   */
  runLoop(name: string, intervalMs: number, now: number, pass: () => Promise<void>): Promise<boolean>;
}
