import type { Instance, InstanceState } from "../domain/instance.ts";
import type { Job, JobError, JobProgress, JobStatus } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";

export interface StoreCapabilities {
  /** Claims lock rows with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other. */
  readonly skipLocked: boolean;
  /** Several server processes may share this store (PostgreSQL); SQLite is one host only. */
  readonly multiHost: boolean;
  /** Tables live in a named schema (PostgreSQL); migrations must look for their bookkeeping there. */
  readonly namedSchemas: boolean;
}

export interface ApiKeyRecord {
  id: string;
  orgId: string;
  name: string;
  prefix: string;
  scopes: string[];
  createdAt: number;
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
}

export interface ClaimRequest {
  /** Who holds the lease: an instance id (agents) or a worker name (benchmarks, tests). */
  owner: string;
  limit: number;
  leaseMs: number;
  now: number;
  /** Recorded on the job as where this attempt runs. */
  compute?: JsonObject;
}

export interface LeaseRef {
  jobId: string;
  leaseToken: string;
}

export type HeartbeatResult = { held: true; cancelRequested: boolean } | { held: false };

export type FinishOutcome =
  | { status: "succeeded" }
  | { status: "cancelled"; error?: JobError }
  | { status: "failed"; error: JobError };

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

  ensureOrg(id: string, name: string, now: number): Promise<void>;
  countApiKeys(): Promise<number>;
  insertApiKey(key: ApiKeyRecord & { hash: string }): Promise<void>;
  findApiKeyByHash(hash: string): Promise<ApiKeyRecord | null>;

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
  /** Ends the attempt; a failure goes back to the queue or fails for good per the job's retry policy. */
  finish(lease: LeaseRef, outcome: FinishOutcome, now: number): Promise<Job | null>;
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
   * Ends attempts whose lease lapsed, or whose timeout passed more than `timeoutGraceMs` ago (the
   * agent enforces the timeout itself and saves outputs; the grace lets it). Returns the jobs changed.
   */
  reapExpired(now: number, timeoutGraceMs: number): Promise<Job[]>;
  countReadyJobs(now: number): Promise<number>;
  countJobsByStatus(): Promise<Record<JobStatus, number>>;

  appendLogs(jobId: string, orgId: string, entries: LogEntry[]): Promise<void>;
  /**
   * The highest `seq` stored for one attempt, 0 when none. A released job is claimed again under the
   * same attempt number, and its new agent numbers its lines after the ones already there.
   */
  lastLogSeq(jobId: string, attempt: number): Promise<number>;
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
  setInstanceProviderId(id: string, providerInstanceId: string): Promise<void>;
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
  listInstances(filter: { provider?: string; states?: readonly InstanceState[] }): Promise<Instance[]>;
  countInstancesByState(): Promise<Record<InstanceState, number>>;

  /** Cluster-wide cadence gate: true for exactly one caller per `intervalMs` across every server process. */
  tryRunLoop(name: string, intervalMs: number, now: number): Promise<boolean>;
}
