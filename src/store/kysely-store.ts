import { randomBytes } from "node:crypto";
import {
  type ExpressionBuilder,
  type Kysely,
  Migrator,
  type Selectable,
  sql,
  type Transaction,
} from "kysely";
import type { Batch, ReadyWork } from "../domain/batch.ts";
import { INSTANCE_STATES, type Instance, type InstanceState, sourcesFor } from "../domain/instance.ts";
import { decideAfterFailure, JOB_STATUSES, type Job, type JobError, type JobStatus } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { LaunchAttempt, LaunchedInstance } from "../domain/machines.ts";
import type { MarketPoint } from "../domain/offers.ts";
import type { Placement, ProvisioningStrategy } from "../domain/provisioning.ts";
import type { AccountStore, LedgerStore } from "./accounts.ts";
import {
  type BatchRow,
  CounterMoves,
  moveChildren,
  ScoreTally,
  settleStatus,
  toBatch,
} from "./batch-counters.ts";
import { KyselyAccounts } from "./kysely-accounts.ts";
import { KyselyLedger } from "./kysely-ledger.ts";
import { migrationProvider } from "./migrations.ts";
import type { Database } from "./schema.ts";
import type {
  ArtifactRefresh,
  BatchChildPolicy,
  BatchClaimRequest,
  ClaimRequest,
  DatasetRecord,
  FinishItem,
  FinishOutcome,
  HeartbeatResult,
  LeaseRef,
  ListChildrenQuery,
  ListJobsQuery,
  LogEntry,
  NewBatch,
  NewBatchChild,
  NewInstance,
  NewJob,
  NotebookRecord,
  QueuedStanding,
  SealedCredential,
  Store,
  StoreCapabilities,
} from "./store.ts";
import { AttemptUsage } from "./usage-writes.ts";

type JobRow = Selectable<Database["jobs"]>;
type InstanceRow = Selectable<Database["instances"]>;

const parseJson = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));

function toJob(row: JobRow): Job {
  return {
    id: row.id,
    orgId: row.org_id,
    kind: row.kind as Job["kind"],
    notebookId: row.notebook_id,
    spec: JSON.parse(row.spec) as JsonObject,
    status: row.status as JobStatus,
    priority: row.priority,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    backoffMinMs: row.backoff_min_ms,
    backoffMaxMs: row.backoff_max_ms,
    timeoutMs: row.timeout_ms,
    runAt: row.run_at,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    leaseOwner: row.lease_owner,
    leaseToken: row.lease_token,
    leaseExpiresAt: row.lease_expires_at,
    cancelRequested: row.cancel_requested === 1,
    progress: parseJson(row.progress),
    error: parseJson(row.error),
    compute: parseJson(row.compute),
    batchId: row.batch_id,
    result: parseJson(row.result),
    userId: row.user_id,
    gpuType: row.gpu_type,
  };
}

function toInstance(row: InstanceRow): Instance {
  return {
    id: row.id,
    orgId: row.org_id,
    provider: row.provider,
    providerInstanceId: row.provider_instance_id,
    state: row.state as InstanceState,
    gpus: JSON.parse(row.gpus) as Instance["gpus"],
    createdAt: row.created_at,
    readyAt: row.ready_at,
    stateChangedAt: row.state_changed_at,
    lastSeenAt: row.last_seen_at,
    terminatedAt: row.terminated_at,
    terminationReason: row.termination_reason,
    bootstrapTokenHash: row.bootstrap_token_hash,
    agentTokenHash: row.agent_token_hash,
    pricePerHour: row.price_per_hour,
    machineId: row.machine_id,
  };
}

const byPriorityThenAge = (a: Job, b: Job) => b.priority - a.priority || (a.id < b.id ? -1 : 1);

/** Children per INSERT: 16 columns each stays well under SQLite's 32,766 bound parameters. */
const CHILD_INSERT_CHUNK = 1000;

const LEASE_CLEARED = { lease_owner: null, lease_token: null, lease_expires_at: null } as const;

function batchColumns(batch: NewBatch) {
  return {
    id: batch.id,
    org_id: batch.orgId,
    name: batch.name,
    model: batch.model,
    model_version: batch.modelVersion,
    priority: batch.priority,
    max_concurrent: batch.maxConcurrent,
    score_name: batch.score.name,
    score_unit: batch.score.unit,
    score_better: batch.score.better,
    spec: JSON.stringify(batch.spec),
    created_at: batch.createdAt,
    user_id: batch.userId ?? null,
  };
}

/** Children in chunks that keep each statement under SQLite's bound-parameter limit (32,766). */
async function insertChildren(
  trx: Kysely<Database>,
  batch: Pick<NewBatch, "id" | "orgId" | "priority" | "createdAt" | "userId">,
  children: NewBatchChild[],
  policy: BatchChildPolicy,
): Promise<void> {
  for (let start = 0; start < children.length; start += CHILD_INSERT_CHUNK) {
    await trx
      .insertInto("jobs")
      .values(
        children.slice(start, start + CHILD_INSERT_CHUNK).map((child) => ({
          id: child.id,
          org_id: batch.orgId,
          kind: "predict",
          notebook_id: null,
          batch_id: batch.id,
          user_id: batch.userId ?? null,
          spec: JSON.stringify(child.spec),
          status: child.failure ? "failed" : "queued",
          priority: batch.priority,
          max_attempts: policy.maxAttempts,
          backoff_min_ms: policy.backoffMinMs,
          backoff_max_ms: policy.backoffMaxMs,
          timeout_ms: policy.timeoutMs,
          run_at: batch.createdAt,
          created_at: batch.createdAt,
          finished_at: child.failure ? batch.createdAt : null,
          error: child.failure ? JSON.stringify(child.failure) : null,
        })),
      )
      .execute();
  }
}

/** Running jobs whose lease one of `leases` still holds: a packed unit's attempts in one predicate. */
const heldBy = (leases: readonly LeaseRef[]) => (eb: ExpressionBuilder<Database, "jobs">) =>
  eb.and([
    eb(
      eb.refTuple("id", "lease_token"),
      "in",
      leases.map((l) => eb.tuple(l.jobId, l.leaseToken)),
    ),
    eb("status", "=", "running"),
  ]);

/**
 * Back to the queue at once, giving back the attempt the claim counted; a job whose cancel was
 * requested while it ran is cancelled instead, since no agent is left to act on the request.
 */
const requeuedUnspent = (eb: ExpressionBuilder<Database, "jobs">, now: number) => {
  const cancelRequested = () => eb.case().when("cancel_requested", "=", 1);
  return {
    status: cancelRequested()
      .then("cancelled" as JobStatus)
      .else("queued" as JobStatus)
      .end(),
    finished_at: cancelRequested().then(now).else(null).end(),
    run_at: now,
    attempts: eb("attempts", "-", 1),
    // The attempt is given back unspent: the job has not started anywhere until its next claim.
    started_at: null,
    compute: null,
    ...LEASE_CLEARED,
  };
};

/**
 * The one Store implementation; dialect folders supply a configured Kysely instance and the
 * capability flags that decide the few places where SQL must differ.
 */
export class KyselyStore implements Store {
  readonly dialect: string;
  readonly capabilities: StoreCapabilities;
  readonly #db: Kysely<Database>;
  readonly #schema: string | undefined;
  readonly accounts: AccountStore;
  readonly ledger: LedgerStore;

  constructor(dialect: string, db: Kysely<Database>, capabilities: StoreCapabilities, schema?: string) {
    this.dialect = dialect;
    this.#db = db;
    this.capabilities = capabilities;
    this.#schema = schema;
    this.accounts = new KyselyAccounts(db);
    this.ledger = new KyselyLedger(db, capabilities.skipLocked);
  }

  async migrate(): Promise<void> {
    // Naming the schema stops the migrator from mistaking another schema's migration tables for ours.
    const schema = this.#schema ?? (this.capabilities.namedSchemas ? await this.#currentSchema() : undefined);
    const migrator = new Migrator({
      db: this.#db,
      provider: migrationProvider,
      ...(schema ? { migrationTableSchema: schema } : {}),
    });
    const { error } = await migrator.migrateToLatest();
    if (error) throw error;
  }

  async #currentSchema(): Promise<string> {
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(this.#db);
    return rows[0]!.schema;
  }

  async close(): Promise<void> {
    await this.#db.destroy();
  }

  async insertNotebook(notebook: NotebookRecord): Promise<void> {
    await this.#db
      .insertInto("notebooks")
      .values({
        id: notebook.id,
        org_id: notebook.orgId,
        name: notebook.name,
        size: notebook.size,
        cell_count: notebook.cellCount,
        blob_key: notebook.blobKey,
        created_at: notebook.createdAt,
      })
      .execute();
  }

  async getNotebook(orgId: string, id: string): Promise<NotebookRecord | null> {
    const row = await this.#db
      .selectFrom("notebooks")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? toNotebook(row) : null;
  }

  async listNotebooks(orgId: string, limit: number): Promise<NotebookRecord[]> {
    const rows = await this.#db
      .selectFrom("notebooks")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("id", "desc")
      .limit(limit)
      .execute();
    return rows.map(toNotebook);
  }

  async insertDataset(dataset: DatasetRecord): Promise<void> {
    await this.#db
      .insertInto("datasets")
      .values({
        id: dataset.id,
        org_id: dataset.orgId,
        name: dataset.name,
        total_size: dataset.totalSize,
        files: JSON.stringify(dataset.files),
        created_at: dataset.createdAt,
      })
      .execute();
  }

  async getDataset(orgId: string, id: string): Promise<DatasetRecord | null> {
    const row = await this.#db
      .selectFrom("datasets")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? toDataset(row) : null;
  }

  async listDatasets(orgId: string, limit: number): Promise<DatasetRecord[]> {
    const rows = await this.#db
      .selectFrom("datasets")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("id", "desc")
      .limit(limit)
      .execute();
    return rows.map(toDataset);
  }

  async enqueue(job: NewJob): Promise<Job> {
    const row = await this.#db
      .insertInto("jobs")
      .values({
        id: job.id,
        org_id: job.orgId,
        kind: job.kind,
        notebook_id: job.notebookId,
        spec: JSON.stringify(job.spec),
        status: "queued",
        priority: job.priority,
        max_attempts: job.maxAttempts,
        backoff_min_ms: job.backoffMinMs,
        backoff_max_ms: job.backoffMaxMs,
        timeout_ms: job.timeoutMs,
        run_at: job.runAt,
        created_at: job.createdAt,
        gpu_type: job.gpu?.type ?? null,
        gpu_count: job.gpu?.count ?? 0,
        strategy: job.strategy ?? null,
        user_id: job.userId ?? null,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toJob(row);
  }

  async getJob(orgId: string, id: string): Promise<Job | null> {
    const row = await this.#db
      .selectFrom("jobs")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? toJob(row) : null;
  }

  async getLeasedJob(lease: LeaseRef): Promise<Job | null> {
    const row = await this.#db
      .selectFrom("jobs")
      .selectAll()
      .where("id", "=", lease.jobId)
      .where("lease_token", "=", lease.leaseToken)
      .executeTakeFirst();
    return row ? toJob(row) : null;
  }

  async listJobs(query: ListJobsQuery): Promise<Job[]> {
    let q = this.#db.selectFrom("jobs").selectAll().where("org_id", "=", query.orgId);
    if (query.notebookId !== undefined) q = q.where("notebook_id", "=", query.notebookId);
    if (query.kind !== undefined) q = q.where("kind", "=", query.kind);
    const rows = await q.orderBy("id", "desc").limit(query.limit).execute();
    return rows.map(toJob);
  }

  /**
   * One statement claims up to `limit` jobs. PostgreSQL skips rows other claimers hold; SQLite's
   * driver opens every transaction with BEGIN IMMEDIATE, so claimers take turns on the write lock.
   */
  async claim(request: ClaimRequest): Promise<Job[]> {
    if (request.limit > 1 && (await this.#anyOrgLimited())) {
      // Each claim checks the limits once; several jobs at a time are claimed one by one so no org
      // goes past its limit within one call.
      const jobs: Job[] = [];
      while (jobs.length < request.limit) {
        const [job] = await this.claim({ ...request, limit: 1 });
        if (!job) break;
        jobs.push(job);
      }
      return jobs;
    }
    const leaseToken = randomBytes(12).toString("base64url");
    const claimIn = async (db: Kysely<Database>) => {
      const shares = await orgShares(db);
      let candidates = db
        .selectFrom("jobs")
        .select("id")
        .where("status", "=", "queued")
        .where("batch_id", "is", null)
        .where("run_at", "<=", request.now)
        .$if(request.placement !== undefined, (q) => q.where((eb) => placementFilter(eb, request.placement!)))
        .$if(shares.full.length > 0, (q) => q.where("org_id", "not in", shares.full))
        .$if(shares.gpuRoom.size > 0, (q) => q.where((eb) => withinGpuRoom(eb, shares)))
        .orderBy("priority", "desc")
        .$if(request.fairShare === true && shares.orgs > 1 && runningOf(shares) !== null, (q) =>
          q.orderBy(runningOf(shares)!),
        )
        .orderBy("id")
        .limit(request.limit);
      if (this.capabilities.skipLocked) candidates = candidates.forUpdate().skipLocked();
      return db
        .updateTable("jobs")
        .set((eb) => ({
          status: "running",
          attempts: eb("attempts", "+", 1),
          started_at: request.now,
          lease_owner: request.owner,
          lease_token: leaseToken,
          lease_expires_at: request.now + request.leaseMs,
          progress: null,
          compute: request.compute ? JSON.stringify(request.compute) : null,
        }))
        .where("id", "in", candidates)
        .returningAll()
        .execute();
    };
    // With row locks the one statement is atomic by itself, and skipping BEGIN/COMMIT saves two round
    // trips per claim; SQLite claims inside its immediate write transaction.
    const rows = this.capabilities.skipLocked
      ? await claimIn(this.#db)
      : await this.#db.transaction().execute((trx) => claimIn(trx));
    return rows.map(toJob).sort(byPriorityThenAge);
  }

  async #anyOrgLimited(): Promise<boolean> {
    const row = await this.#db
      .selectFrom("orgs")
      .select("id")
      .where((eb) =>
        eb.or([
          eb("max_running_jobs", "is not", null),
          eb("max_gpus", "is not", null),
          eb("max_instances", "is not", null),
        ]),
      )
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  async heartbeat(
    lease: LeaseRef,
    now: number,
    leaseMs: number,
    progress?: Job["progress"],
  ): Promise<HeartbeatResult> {
    const row = await this.#db
      .updateTable("jobs")
      .set({
        lease_expires_at: now + leaseMs,
        ...(progress ? { progress: JSON.stringify(progress) } : {}),
      })
      .where("id", "=", lease.jobId)
      .where("lease_token", "=", lease.leaseToken)
      .where("status", "=", "running")
      .returning("cancel_requested")
      .executeTakeFirst();
    return row ? { held: true, cancelRequested: row.cancel_requested === 1 } : { held: false };
  }

  async heartbeatMany(
    leases: readonly LeaseRef[],
    now: number,
    leaseMs: number,
  ): Promise<Map<string, HeartbeatResult>> {
    const results = new Map<string, HeartbeatResult>(leases.map((l) => [l.jobId, { held: false }]));
    if (leases.length === 0) return results;
    const rows = await this.#db
      .updateTable("jobs")
      .set({ lease_expires_at: now + leaseMs })
      .where(heldBy(leases))
      .returning(["id", "cancel_requested"])
      .execute();
    for (const row of rows) results.set(row.id, { held: true, cancelRequested: row.cancel_requested === 1 });
    return results;
  }

  async finish(lease: LeaseRef, outcome: FinishOutcome, now: number): Promise<Job | null> {
    const [job] = await this.finishMany([{ lease, outcome }], now);
    return job ?? null;
  }

  /**
   * Ends the attempts of one agent report in set-based statements (a packed unit's 64 children were
   * 64 × three round trips): one locking read of the failures and cancels, whose endings depend on
   * their rows, one UPDATE of every ending, one insert of their log lines, one score and one counter
   * update per batch, and the attempts' usage records.
   */
  async finishMany(items: readonly FinishItem[], now: number): Promise<(Job | null)[]> {
    if (items.length === 0) return [];
    return this.#db.transaction().execute(async (trx) => {
      // A job named twice in one report ends once; the repeat is answered like a finish delivered twice.
      const firsts = new Map<string, FinishItem>();
      for (const item of items) if (!firsts.has(item.lease.jobId)) firsts.set(item.lease.jobId, item);
      const unique = [...firsts.values()];
      const held = await this.#heldRows(
        trx,
        unique.filter((item) => item.outcome.status !== "succeeded").map((item) => item.lease),
      );
      const endings: AttemptEnding[] = [];
      for (const { lease, outcome } of unique) {
        if (outcome.status === "succeeded") endings.push(successEnding(lease, outcome, now));
        else {
          const row = held.get(lease.jobId);
          if (row) endings.push(rowEnding(row, outcome, now));
        }
      }
      const ended = await writeEndings(trx, endings);
      const moves = new CounterMoves();
      const usage = new AttemptUsage();
      const scores = new ScoreTally();
      const logRows: LogRow[] = [];
      for (const { lease, outcome, logs } of unique) {
        const job = ended.get(lease.jobId);
        if (!job) continue;
        // The attempt as it ran: an ending changes none of the columns its usage record reads.
        usage.add(job);
        for (const entry of logs ?? []) logRows.push({ job_id: job.id, org_id: job.orgId, ...entry });
        if (!job.batchId) continue;
        moves.add(job.batchId, "running", job.status);
        if (outcome.status === "succeeded" && outcome.score !== undefined)
          scores.add(job.batchId, job.id, outcome.score);
      }
      await insertLogRows(trx, logRows);
      await scores.apply(trx);
      await moves.apply(trx, now);
      await usage.write(trx, now);
      return items.map((item) =>
        firsts.get(item.lease.jobId) === item ? (ended.get(item.lease.jobId) ?? null) : null,
      );
    });
  }

  /** The running rows these leases still hold, locked (PostgreSQL) in id order until the transaction ends. */
  async #heldRows(trx: Transaction<Database>, leases: readonly LeaseRef[]): Promise<Map<string, JobRow>> {
    if (leases.length === 0) return new Map();
    const tokens = new Map(leases.map((lease) => [lease.jobId, lease.leaseToken]));
    const rows = await trx
      .selectFrom("jobs")
      .selectAll()
      .where("id", "in", [...tokens.keys()])
      .where("status", "=", "running")
      .orderBy("id")
      .$if(this.capabilities.skipLocked, (q) => q.forUpdate())
      .execute();
    return new Map(rows.filter((row) => row.lease_token === tokens.get(row.id)).map((row) => [row.id, row]));
  }

  async release(lease: LeaseRef, now: number): Promise<Job | null> {
    const [job] = await this.#releaseWhere(now, { lease });
    return job ?? null;
  }

  async releaseHeldBy(owner: string, now: number): Promise<Job[]> {
    return this.#releaseWhere(now, { owner });
  }

  async #releaseWhere(now: number, held: { lease: LeaseRef } | { owner: string }): Promise<Job[]> {
    return this.#db.transaction().execute(async (trx) => {
      // The rows as they ran: the attempt's time on its instance is recorded before the requeue clears it.
      const running = await trx
        .selectFrom("jobs")
        .selectAll()
        .where("status", "=", "running")
        .where((eb) =>
          "lease" in held
            ? eb.and([eb("id", "=", held.lease.jobId), eb("lease_token", "=", held.lease.leaseToken)])
            : eb("lease_owner", "=", held.owner),
        )
        .$if(this.capabilities.skipLocked, (q) => q.forUpdate())
        .execute();
      if (running.length === 0) return [];
      const usage = new AttemptUsage();
      for (const row of running) usage.add(toJob(row));
      const rows = await trx
        .updateTable("jobs")
        .set((eb) => requeuedUnspent(eb, now))
        .where(
          "id",
          "in",
          running.map((row) => row.id),
        )
        .where("status", "=", "running")
        .returningAll()
        .execute();
      const jobs = rows.map(toJob);
      for (const job of jobs) {
        if (job.batchId) await moveChildren(trx, job.batchId, "running", job.status, 1, now);
      }
      await usage.write(trx, now);
      return jobs;
    });
  }

  async requestCancel(orgId: string, id: string, now: number): Promise<Job | null> {
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx
        .selectFrom("jobs")
        .selectAll()
        .where("org_id", "=", orgId)
        .where("id", "=", id)
        .$if(this.capabilities.skipLocked, (q) => q.forUpdate())
        .executeTakeFirst();
      if (!row) return null;
      if (row.status === "queued") {
        const updated = await trx
          .updateTable("jobs")
          .set({ status: "cancelled", cancel_requested: 1, finished_at: now })
          .where("id", "=", id)
          .returningAll()
          .executeTakeFirstOrThrow();
        if (row.batch_id) await moveChildren(trx, row.batch_id, "queued", "cancelled", 1, now);
        return toJob(updated);
      }
      if (row.status === "running") {
        const updated = await trx
          .updateTable("jobs")
          .set({ cancel_requested: 1 })
          .where("id", "=", id)
          .returningAll()
          .executeTakeFirstOrThrow();
        return toJob(updated);
      }
      return toJob(row);
    });
  }

  async requestCancelOf(
    orgId: string,
    userId: string | null,
    reason: JobError,
    now: number,
  ): Promise<string[]> {
    const error = JSON.stringify(reason);
    const jobs = await this.#db.transaction().execute(async (trx) => {
      const flagged = await trx
        .updateTable("jobs")
        .set({ cancel_requested: 1, error })
        .where("org_id", "=", orgId)
        .$if(userId !== null, (q) => q.where("user_id", "=", userId!))
        .where("status", "=", "running")
        .where("batch_id", "is", null)
        .returning("id")
        .execute();
      const cancelled = await trx
        .updateTable("jobs")
        .set({ status: "cancelled", cancel_requested: 1, finished_at: now, error })
        .where("org_id", "=", orgId)
        .$if(userId !== null, (q) => q.where("user_id", "=", userId!))
        .where("status", "=", "queued")
        .where("batch_id", "is", null)
        .returning("id")
        .execute();
      return [...flagged, ...cancelled].map((row) => row.id);
    });
    const batches = await this.#db
      .selectFrom("batches")
      .select("id")
      .where("org_id", "=", orgId)
      .$if(userId !== null, (q) => q.where("user_id", "=", userId!))
      .where("finished_at", "is", null)
      .execute();
    for (const batch of batches) await this.requestBatchCancel(orgId, batch.id, now);
    return [...jobs, ...batches.map((batch) => batch.id)];
  }

  async listRunningJobs(limit: number): Promise<Job[]> {
    const rows = await this.#db
      .selectFrom("jobs")
      .selectAll()
      .where("status", "=", "running")
      .limit(limit)
      .execute();
    return rows.map(toJob);
  }

  async reapExpired(now: number, timeoutGraceMs: number): Promise<Job[]> {
    return this.#db.transaction().execute(async (trx) => {
      let expired = trx
        .selectFrom("jobs")
        .selectAll()
        .where("status", "=", "running")
        .where((eb) =>
          eb.or([
            eb("lease_expires_at", "<", now),
            eb(eb("started_at", "+", eb.ref("timeout_ms")), "<", now - timeoutGraceMs),
          ]),
        )
        .limit(500);
      if (this.capabilities.skipLocked) expired = expired.forUpdate().skipLocked();
      const rows = await expired.execute();
      const endings = rows.map((row) => {
        const timedOut = row.started_at !== null && row.started_at + row.timeout_ms < now - timeoutGraceMs;
        const error: JobError = timedOut
          ? {
              code: "timeout",
              message: `Run exceeded its timeout of ${Math.round(row.timeout_ms / 1000)} s`,
              retryable: false,
            }
          : {
              code: "lease_expired",
              message: `Instance ${row.lease_owner ?? "?"} stopped renewing its lease (lost agent or instance)`,
              retryable: true,
            };
        return rowEnding(row, { status: "failed", error }, now);
      });
      const ended = await writeEndings(trx, endings);
      const moves = new CounterMoves();
      const usage = new AttemptUsage();
      const changed = rows.flatMap((row) => ended.get(row.id) ?? []);
      for (const job of changed) {
        usage.add(job);
        if (job.batchId) moves.add(job.batchId, "running", job.status);
      }
      await moves.apply(trx, now);
      await usage.write(trx, now);
      return changed;
    });
  }

  async readyWork(now: number): Promise<ReadyWork> {
    const single = await this.#db
      .selectFrom("jobs")
      .select(["gpu_type", "gpu_count", "strategy", (eb) => eb.fn.countAll<number>().as("n")])
      .where("status", "=", "queued")
      .where("batch_id", "is", null)
      .where("run_at", "<=", now)
      .groupBy(["gpu_type", "gpu_count", "strategy"])
      .execute();
    const batches = await this.#db
      .selectFrom("batches")
      .select(["model", "pending", "running", "max_concurrent"])
      .where("pending", ">", 0)
      .whereRef("running", "<", "max_concurrent")
      .execute();
    return {
      jobs: single.filter((g) => g.gpu_type === null).reduce((sum, g) => sum + Number(g.n), 0),
      gpuJobs: single.flatMap((g) =>
        g.gpu_type === null
          ? []
          : [
              {
                type: g.gpu_type,
                count: Number(g.gpu_count),
                strategy: g.strategy as ProvisioningStrategy | null,
                jobs: Number(g.n),
              },
            ],
      ),
      batches: batches.map((b) => ({
        model: b.model,
        startable: Math.min(Number(b.pending), Number(b.max_concurrent) - Number(b.running)),
      })),
    };
  }

  async insertBatch(batch: NewBatch, children: NewBatchChild[], policy: BatchChildPolicy): Promise<Batch> {
    const failed = children.filter((c) => c.failure).length;
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx
        .insertInto("batches")
        .values({
          ...batchColumns(batch),
          status: children.length === failed ? "failed" : "queued",
          total: children.length,
          pending: children.length - failed,
          failed,
          finished_at: children.length === failed ? batch.createdAt : null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await insertChildren(trx, batch, children, policy);
      return toBatch(row);
    });
  }

  async insertValidatingBatch(batch: NewBatch, total: number): Promise<Batch> {
    const row = await this.#db
      .insertInto("batches")
      .values({ ...batchColumns(batch), status: "validating", total, pending: 0 })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toBatch(row);
  }

  async claimBatchValidation(now: number, leaseMs: number): Promise<Batch | null> {
    return this.#db.transaction().execute(async (trx) => {
      let pick = trx
        .selectFrom("batches")
        .selectAll()
        .where("status", "=", "validating")
        .where((eb) => eb.or([eb("validation_until", "is", null), eb("validation_until", "<", now)]))
        .orderBy("id")
        .limit(1);
      if (this.capabilities.skipLocked) pick = pick.forUpdate().skipLocked();
      const row = await pick.executeTakeFirst();
      if (!row) return null;
      // A lapsed check starts over: children a crashed server had added go first.
      await trx.deleteFrom("jobs").where("batch_id", "=", row.id).execute();
      const claimed = await trx
        .updateTable("batches")
        .set({ validation_until: now + leaseMs, failed: 0, pending: 0 })
        .where("id", "=", row.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      return toBatch(claimed);
    });
  }

  async appendBatchChildren(
    batch: Batch,
    children: NewBatchChild[],
    policy: BatchChildPolicy,
  ): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      await insertChildren(trx, batch, children, policy);
      const failed = children.filter((c) => c.failure).length;
      if (failed > 0) {
        await trx
          .updateTable("batches")
          .set((eb) => ({ failed: eb("failed", "+", failed) }))
          .where("id", "=", batch.id)
          .execute();
      }
    });
  }

  async openValidatedBatch(batchId: string, notes: JsonObject, now: number): Promise<Batch | null> {
    return this.#db.transaction().execute(async (trx) => {
      const current = await trx
        .selectFrom("batches")
        .select("spec")
        .where("id", "=", batchId)
        .executeTakeFirst();
      if (!current) return null;
      const queued = await trx
        .selectFrom("jobs")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("batch_id", "=", batchId)
        .where("status", "=", "queued")
        .executeTakeFirstOrThrow();
      const row = await trx
        .updateTable("batches")
        .set({
          status: "queued",
          pending: Number(queued.n),
          validation_until: null,
          spec: JSON.stringify({ ...(JSON.parse(current.spec) as JsonObject), ...notes }),
        })
        .where("id", "=", batchId)
        .where("status", "=", "validating")
        .returningAll()
        .executeTakeFirst();
      if (!row) return null;
      // A batch whose every row was invalid (skip_invalid) ends at once.
      await settleStatus(trx, toBatch(row), now);
      const settled = await trx
        .selectFrom("batches")
        .selectAll()
        .where("id", "=", batchId)
        .executeTakeFirstOrThrow();
      return toBatch(settled);
    });
  }

  async rejectBatch(batchId: string, rejection: JsonObject, now: number): Promise<Batch | null> {
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom("batches").select("spec").where("id", "=", batchId).executeTakeFirst();
      if (!row) return null;
      await trx.deleteFrom("jobs").where("batch_id", "=", batchId).execute();
      const updated = await trx
        .updateTable("batches")
        .set({
          status: "rejected",
          pending: 0,
          failed: 0,
          finished_at: now,
          validation_until: null,
          spec: JSON.stringify({ ...(JSON.parse(row.spec) as JsonObject), rejection }),
        })
        .where("id", "=", batchId)
        .where("status", "=", "validating")
        .returningAll()
        .executeTakeFirst();
      return updated ? toBatch(updated) : null;
    });
  }

  async getBatch(orgId: string, id: string): Promise<Batch | null> {
    const row = await this.#db
      .selectFrom("batches")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? toBatch(row) : null;
  }

  async listBatches(orgId: string, limit: number): Promise<Batch[]> {
    const rows = await this.#db
      .selectFrom("batches")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("id", "desc")
      .limit(limit)
      .execute();
    return rows.map(toBatch);
  }

  async listBatchChildren(query: ListChildrenQuery): Promise<Job[]> {
    let q = this.#db
      .selectFrom("jobs")
      .selectAll()
      .where("org_id", "=", query.orgId)
      .where("batch_id", "=", query.batchId);
    if (query.status) q = q.where("status", "=", query.status);
    if (query.after) q = q.where("id", ">", query.after);
    const rows = await q.orderBy("id").limit(query.limit).execute();
    return rows.map(toJob);
  }

  /**
   * The batch row is locked while children are claimed, so concurrent claimers of one batch take
   * turns and `max_concurrent` holds; children are locked with SKIP LOCKED like any claim.
   */
  async claimBatchChildren(request: BatchClaimRequest): Promise<{ batch: Batch; jobs: Job[] } | null> {
    if (request.models.length === 0) return null;
    const leaseToken = randomBytes(12).toString("base64url");
    return this.#db.transaction().execute(async (trx) => {
      const shares = await orgShares(trx);
      const fair = request.fairShare === true && shares.orgs > 1;
      let pick = trx
        .selectFrom("batches")
        .selectAll()
        .where("pending", ">", 0)
        .whereRef("running", "<", "max_concurrent")
        .where("model", "in", request.models)
        .where("cancel_requested", "=", 0)
        .$if(shares.full.length > 0, (q) => q.where("org_id", "not in", shares.full));
      if (request.batchId) {
        pick = pick.where("id", "=", request.batchId);
      } else {
        pick = pick.orderBy("priority", "desc");
        const byRunning = runningOf(shares);
        if (fair && byRunning) pick = pick.orderBy(byRunning);
        const preferred = request.preferBatchId;
        if (preferred)
          pick = pick.orderBy((eb) => eb.case().when("id", "=", preferred).then(0).else(1).end());
        pick = pick.orderBy("id").limit(1);
      }
      if (this.capabilities.skipLocked) pick = pick.forUpdate().skipLocked();
      const batchRow = await pick.executeTakeFirst();
      if (!batchRow) return null;
      const room = Math.min(
        request.limitFor(batchRow.model),
        batchRow.max_concurrent - batchRow.running,
        shares.jobRoom.get(batchRow.org_id) ?? Number.POSITIVE_INFINITY,
      );
      let candidates = trx
        .selectFrom("jobs")
        .select("id")
        .where("batch_id", "=", batchRow.id)
        .where("status", "=", "queued")
        .where("run_at", "<=", request.now)
        .orderBy("id")
        .limit(room);
      if (this.capabilities.skipLocked) candidates = candidates.forUpdate().skipLocked();
      const rows = await trx
        .updateTable("jobs")
        .set((eb) => ({
          status: "running",
          attempts: eb("attempts", "+", 1),
          started_at: request.now,
          lease_owner: request.owner,
          lease_token: leaseToken,
          lease_expires_at: request.now + request.leaseMs,
          progress: null,
          // The unit's packing is the share of the instance each child pays for (domain/usage.ts).
          compute: request.compute
            ? JSON.stringify({ ...request.compute, share: request.limitFor(batchRow.model) })
            : null,
        }))
        .where("id", "in", candidates)
        .returningAll()
        .execute();
      if (rows.length === 0) return null;
      await moveChildren(trx, batchRow.id, "queued", "running", rows.length, request.now);
      const batch = await trx
        .selectFrom("batches")
        .selectAll()
        .where("id", "=", batchRow.id)
        .executeTakeFirstOrThrow();
      return { batch: toBatch(batch), jobs: rows.map(toJob).sort((a, b) => (a.id < b.id ? -1 : 1)) };
    });
  }

  async topQueued(
    now: number,
    fairShare: boolean,
  ): Promise<{ single: QueuedStanding | null; batch: QueuedStanding | null }> {
    const shares = await orgShares(this.#db);
    const fair = fairShare && shares.orgs > 1;
    const single = await this.#db
      .selectFrom("jobs")
      .select(["priority", "org_id"])
      .where("status", "=", "queued")
      .where("batch_id", "is", null)
      .where("run_at", "<=", now)
      .$if(shares.full.length > 0, (q) => q.where("org_id", "not in", shares.full))
      .orderBy("priority", "desc")
      .$if(fair && runningOf(shares) !== null, (q) => q.orderBy(runningOf(shares)!))
      .limit(1)
      .executeTakeFirst();
    const batch = await this.#db
      .selectFrom("batches")
      .select(["priority", "org_id"])
      .where("pending", ">", 0)
      .whereRef("running", "<", "max_concurrent")
      .where("cancel_requested", "=", 0)
      .$if(shares.full.length > 0, (q) => q.where("org_id", "not in", shares.full))
      .orderBy("priority", "desc")
      .$if(fair && runningOf(shares) !== null, (q) => q.orderBy(runningOf(shares)!))
      .limit(1)
      .executeTakeFirst();
    const standing = (row: { priority: number; org_id: string } | undefined) =>
      row ? { priority: row.priority, orgRunning: shares.running.get(row.org_id) ?? 0 } : null;
    return { single: standing(single), batch: standing(batch) };
  }

  async requestBatchCancel(orgId: string, id: string, now: number): Promise<Batch | null> {
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx
        .selectFrom("batches")
        .selectAll()
        .where("org_id", "=", orgId)
        .where("id", "=", id)
        .$if(this.capabilities.skipLocked, (q) => q.forUpdate())
        .executeTakeFirst();
      if (!row) return null;
      if (row.status === "succeeded" || row.status === "failed" || row.status === "cancelled") {
        return toBatch(row);
      }
      await trx.updateTable("batches").set({ cancel_requested: 1 }).where("id", "=", id).execute();
      const cancelled = await trx
        .updateTable("jobs")
        .set({ status: "cancelled", cancel_requested: 1, finished_at: now })
        .where("batch_id", "=", id)
        .where("status", "=", "queued")
        .executeTakeFirst();
      await trx
        .updateTable("jobs")
        .set({ cancel_requested: 1 })
        .where("batch_id", "=", id)
        .where("status", "=", "running")
        .execute();
      await moveChildren(trx, id, "queued", "cancelled", Number(cancelled.numUpdatedRows), now);
      const updated = await trx
        .selectFrom("batches")
        .selectAll()
        .where("id", "=", id)
        .executeTakeFirstOrThrow();
      // With nothing to move (everything running), the status still has to learn about the cancel.
      await settleStatus(trx, toBatch(updated), now);
      const settled = await trx
        .selectFrom("batches")
        .selectAll()
        .where("id", "=", id)
        .executeTakeFirstOrThrow();
      return toBatch(settled);
    });
  }

  async batchesDueForArtifacts(now: number, refresh: ArtifactRefresh, limit: number): Promise<Batch[]> {
    // A running batch waits the longer of the minimum and its size times perChildMs.
    const spacing = sql<number>`case when total * ${refresh.perChildMs} > ${refresh.minMs} then total * ${refresh.perChildMs} else ${refresh.minMs} end`;
    const rows: BatchRow[] = await this.#db
      .selectFrom("batches")
      .selectAll()
      .where((eb) =>
        eb.or([
          // Finished since its artifacts were last written: write the final ones now.
          eb.and([eb("finished_at", "is not", null), eb("artifacts_at", "is", null)]),
          eb.and([eb("finished_at", "is not", null), eb("artifacts_at", "<", eb.ref("finished_at"))]),
          // A running one once per spacing, counted from its start until the first write.
          eb.and([
            eb("status", "=", "running"),
            eb(sql`coalesce(artifacts_at, started_at) + ${spacing}`, "<", now),
          ]),
        ]),
      )
      // Finished batches first (SQLite and PostgreSQL sort NULLs differently, so say it outright).
      .orderBy(sql`case when finished_at is null then 1 else 0 end`)
      .orderBy("id")
      .limit(limit)
      .execute();
    return rows.map(toBatch);
  }

  async markArtifactsWritten(batchId: string, at: number): Promise<void> {
    await this.#db.updateTable("batches").set({ artifacts_at: at }).where("id", "=", batchId).execute();
  }

  async countJobsByStatus(): Promise<Record<JobStatus, number>> {
    const rows = await this.#db
      .selectFrom("jobs")
      .select(["status", (eb) => eb.fn.countAll<number>().as("n")])
      .groupBy("status")
      .execute();
    const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
    for (const row of rows) counts[row.status as JobStatus] = Number(row.n);
    return counts;
  }

  async appendLeasedLogs(items: readonly { lease: LeaseRef; entries: LogEntry[] }[]): Promise<string[]> {
    if (items.length === 0) return [];
    const held = await this.#db
      .selectFrom("jobs")
      .select(["id", "org_id"])
      .where(heldBy(items.map((item) => item.lease)))
      .execute();
    const orgOf = new Map(held.map((row) => [row.id, row.org_id]));
    await insertLogRows(
      this.#db,
      items.flatMap(({ lease, entries }) => {
        const orgId = orgOf.get(lease.jobId);
        return orgId === undefined
          ? []
          : entries.map((entry) => ({ job_id: lease.jobId, org_id: orgId, ...entry }));
      }),
    );
    return items.filter((item) => !orgOf.has(item.lease.jobId)).map((item) => item.lease.jobId);
  }

  async lastLogSeqs(attempts: readonly { jobId: string; attempt: number }[]): Promise<Map<string, number>> {
    const seqs = new Map(attempts.map((a) => [a.jobId, 0]));
    if (attempts.length === 0) return seqs;
    const rows = await this.#db
      .selectFrom("job_logs")
      .select((eb) => ["job_id", eb.fn.max("seq").as("seq")])
      .where((eb) =>
        eb(
          eb.refTuple("job_id", "attempt"),
          "in",
          attempts.map((a) => eb.tuple(a.jobId, a.attempt)),
        ),
      )
      .groupBy("job_id")
      .execute();
    for (const row of rows) seqs.set(row.job_id, Number(row.seq ?? 0));
    return seqs;
  }

  async readLogs(
    orgId: string,
    jobId: string,
    after: { attempt: number; seq: number },
    limit: number,
  ): Promise<LogEntry[]> {
    return this.#db
      .selectFrom("job_logs")
      .select(["attempt", "seq", "ts", "stream", "text"])
      .where("org_id", "=", orgId)
      .where("job_id", "=", jobId)
      .where((eb) =>
        eb.or([
          eb("attempt", ">", after.attempt),
          eb.and([eb("attempt", "=", after.attempt), eb("seq", ">", after.seq)]),
        ]),
      )
      .orderBy("attempt")
      .orderBy("seq")
      .limit(limit)
      .execute();
  }

  async insertInstance(instance: NewInstance): Promise<Instance> {
    const row = await this.#db
      .insertInto("instances")
      .values({
        id: instance.id,
        org_id: instance.orgId,
        provider: instance.provider,
        state: "provisioning",
        gpus: JSON.stringify(instance.gpus),
        created_at: instance.createdAt,
        state_changed_at: instance.createdAt,
        bootstrap_token_hash: instance.bootstrapTokenHash,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toInstance(row);
  }

  async findInstanceByAgentToken(hash: string): Promise<Instance | null> {
    const row = await this.#db
      .selectFrom("instances")
      .selectAll()
      .where("agent_token_hash", "=", hash)
      .where("state", "!=", "terminated")
      .executeTakeFirst();
    return row ? toInstance(row) : null;
  }

  async registerInstance(
    id: string,
    bootstrapTokenHash: string,
    agentTokenHash: string,
    now: number,
  ): Promise<boolean> {
    const result = await this.#db
      .updateTable("instances")
      .set({
        state: "ready",
        bootstrap_token_hash: null,
        agent_token_hash: agentTokenHash,
        ready_at: now,
        state_changed_at: now,
        last_seen_at: now,
      })
      .where("id", "=", id)
      .where("bootstrap_token_hash", "=", bootstrapTokenHash)
      .where("state", "=", "provisioning")
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  async recordLaunch(id: string, launched: LaunchedInstance): Promise<void> {
    await this.#db
      .updateTable("instances")
      .set({
        provider_instance_id: launched.providerInstanceId,
        machine_id: launched.machineId,
        price_per_hour: launched.pricePerHour,
      })
      .where("id", "=", id)
      .execute();
  }

  async putCredential(credential: SealedCredential): Promise<void> {
    const values = {
      ciphertext: credential.ciphertext,
      iv: credential.iv,
      tag: credential.tag,
      key_hint: credential.keyHint,
      updated_at: credential.updatedAt,
    };
    await this.#db
      .insertInto("provider_credentials")
      .values({ org_id: credential.orgId, provider: credential.provider, ...values })
      .onConflict((oc) => oc.columns(["org_id", "provider"]).doUpdateSet(values))
      .execute();
  }

  async listCredentials(orgId: string): Promise<SealedCredential[]> {
    const rows = await this.#db
      .selectFrom("provider_credentials")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("provider")
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      provider: row.provider,
      ciphertext: row.ciphertext,
      iv: row.iv,
      tag: row.tag,
      keyHint: row.key_hint,
      updatedAt: Number(row.updated_at),
    }));
  }

  async deleteCredential(orgId: string, provider: string): Promise<boolean> {
    const result = await this.#db
      .deleteFrom("provider_credentials")
      .where("org_id", "=", orgId)
      .where("provider", "=", provider)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async insertMarketPoints(orgId: string, points: readonly MarketPoint[], keepSince: number): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      await trx
        .deleteFrom("market_snapshots")
        .where("org_id", "=", orgId)
        .where("taken_at", "<", keepSince)
        .execute();
      if (points.length === 0) return;
      await trx
        .insertInto("market_snapshots")
        .values(
          points.map((point) => ({
            org_id: orgId,
            taken_at: point.takenAt,
            gpu: point.gpu,
            spot: point.spot ? 1 : 0,
            offers: point.prices.offers,
            min_price: point.prices.min,
            median_price: point.prices.median,
            p90_price: point.prices.p90,
          })),
        )
        .onConflict((oc) => oc.columns(["org_id", "taken_at", "gpu", "spot"]).doNothing())
        .execute();
    });
  }

  async listMarketPoints(orgId: string, since: number): Promise<MarketPoint[]> {
    const rows = await this.#db
      .selectFrom("market_snapshots")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("taken_at", ">=", since)
      .orderBy("taken_at")
      .orderBy("gpu")
      .orderBy("spot")
      .execute();
    return rows.map((row) => ({
      takenAt: Number(row.taken_at),
      gpu: row.gpu,
      spot: row.spot === 1,
      prices: {
        offers: row.offers,
        min: row.min_price,
        median: row.median_price,
        p90: row.p90_price,
      },
    }));
  }

  async listLaunchAttempts(orgId: string, since: number, provider?: string): Promise<LaunchAttempt[]> {
    const rows = await this.#db
      .selectFrom("instances")
      .select([
        "id",
        "provider",
        "machine_id",
        "price_per_hour",
        "created_at",
        "ready_at",
        "terminated_at",
        "termination_reason",
      ])
      .where("org_id", "=", orgId)
      .where("created_at", ">=", since)
      .$if(provider !== undefined, (q) => q.where("provider", "=", provider!))
      .orderBy("created_at", "desc")
      .orderBy("id", "desc")
      .execute();
    return rows.map((row) => ({
      instanceId: row.id,
      provider: row.provider,
      machineId: row.machine_id,
      pricePerHour: row.price_per_hour,
      launchedAt: row.created_at,
      readyAt: row.ready_at,
      endedAt: row.terminated_at,
      error: row.ready_at === null ? row.termination_reason : null,
    }));
  }

  async transitionInstance(
    id: string,
    from: readonly InstanceState[],
    to: InstanceState,
    now: number,
    reason?: string,
  ): Promise<boolean> {
    const sources = sourcesFor(to, from);
    if (sources.length === 0) return false;
    const result = await this.#db
      .updateTable("instances")
      .set({
        state: to,
        state_changed_at: now,
        ...(to === "terminated" ? { terminated_at: now, termination_reason: reason ?? null } : {}),
      })
      .where("id", "=", id)
      .where("state", "in", sources)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  async touchInstance(id: string, now: number): Promise<void> {
    await this.#db.updateTable("instances").set({ last_seen_at: now }).where("id", "=", id).execute();
  }

  async listInstances(filter: {
    orgId?: string;
    provider?: string;
    states?: readonly InstanceState[];
    ids?: readonly string[];
    since?: number;
  }): Promise<Instance[]> {
    if (filter.ids?.length === 0) return [];
    let q = this.#db.selectFrom("instances").selectAll();
    if (filter.orgId !== undefined) q = q.where("org_id", "=", filter.orgId);
    if (filter.since !== undefined) q = q.where("created_at", ">=", filter.since);
    if (filter.ids !== undefined) q = q.where("id", "in", filter.ids);
    if (filter.provider !== undefined) q = q.where("provider", "=", filter.provider);
    if (filter.states !== undefined) q = q.where("state", "in", filter.states);
    const rows = await q.orderBy("id").execute();
    return rows.map(toInstance);
  }

  async countInstancesByState(): Promise<Record<InstanceState, number>> {
    const rows = await this.#db
      .selectFrom("instances")
      .select(["state", (eb) => eb.fn.countAll<number>().as("n")])
      .groupBy("state")
      .execute();
    const counts = Object.fromEntries(INSTANCE_STATES.map((s) => [s, 0])) as Record<InstanceState, number>;
    for (const row of rows) counts[row.state as InstanceState] = Number(row.n);
    return counts;
  }

  /**
   * On PostgreSQL the loop's row stays locked, by a transaction left open, while the pass runs on the
   * pool's other connections: every other process skips the locked row, and PostgreSQL ends the
   * transaction, and with it the lock, when the connection of a process killed mid-pass drops.
   */
  async runLoop(name: string, intervalMs: number, now: number, pass: () => Promise<void>): Promise<boolean> {
    if (!this.capabilities.skipLocked) {
      if (!(await this.#takeTurn(name, intervalMs, now))) return false;
      await pass();
      return true;
    }
    // Most calls are not this loop's turn: a plain read answers those without a transaction.
    const loop = await this.#db
      .selectFrom("cluster_loops")
      .select("last_run_at")
      .where("name", "=", name)
      .executeTakeFirst();
    if (loop && loop.last_run_at > now - intervalMs) return false;
    if (!loop) {
      await this.#db
        .insertInto("cluster_loops")
        .values({ name, last_run_at: 0 })
        .onConflict((oc) => oc.column("name").doNothing())
        .execute();
    }
    let ran = false;
    let failure: { error: unknown } | null = null;
    await this.#db.transaction().execute(async (trx) => {
      const turn = await trx
        .selectFrom("cluster_loops")
        .select("name")
        .where("name", "=", name)
        .where("last_run_at", "<=", now - intervalMs)
        .forUpdate()
        .skipLocked()
        .executeTakeFirst();
      if (!turn) return;
      await trx.updateTable("cluster_loops").set({ last_run_at: now }).where("name", "=", name).execute();
      ran = true;
      // A failed pass still took its turn, as on SQLite: the next is an interval away.
      await pass().catch((error: unknown) => {
        failure = { error };
      });
    });
    if (failure) throw (failure as { error: unknown }).error;
    return ran;
  }

  /** pg-boss's cadence gate: the conditional UPDATE succeeds for one caller per interval. */
  async #takeTurn(name: string, intervalMs: number, now: number): Promise<boolean> {
    await this.#db
      .insertInto("cluster_loops")
      .values({ name, last_run_at: 0 })
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
    const result = await this.#db
      .updateTable("cluster_loops")
      .set({ last_run_at: now })
      .where("name", "=", name)
      .where("last_run_at", "<=", now - intervalMs)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }
}

function toNotebook(row: Selectable<Database["notebooks"]>): NotebookRecord {
  return {
    id: row.id,
    orgId: row.org_id,
    name: row.name,
    size: row.size,
    cellCount: row.cell_count,
    blobKey: row.blob_key,
    createdAt: row.created_at,
  };
}

function toDataset(row: Selectable<Database["datasets"]>): DatasetRecord {
  return {
    id: row.id,
    orgId: row.org_id,
    name: row.name,
    totalSize: row.total_size,
    files: JSON.parse(row.files) as DatasetRecord["files"],
    createdAt: row.created_at,
  };
}

/** The jobs outside batches an instance with this placement may take. */
/**
 * Each org's running jobs and GPUs, and what its limits leave: read once per claim, so ordering and
 * limits cost one small grouped query instead of a subquery per candidate row. Concurrent claims on
 * PostgreSQL each see the same counts, so a limit can be overshot by the claims in flight at once.
 */
interface OrgShares {
  orgs: number;
  running: Map<string, number>;
  /** Orgs at their running-jobs or instances limit. */
  full: string[];
  /** Jobs an org with a limit may still start. */
  jobRoom: Map<string, number>;
  /** GPUs an org with a GPU limit may still take. */
  gpuRoom: Map<string, number>;
}

async function orgShares(db: Kysely<Database>): Promise<OrgShares> {
  // One round trip on the claim's hot path: every org with its limits and what it runs now.
  const orgs = await db
    .selectFrom("orgs")
    .leftJoin(
      (eb) =>
        eb
          .selectFrom("jobs")
          .select([
            "org_id",
            (e) => e.fn.countAll<number>().as("jobs"),
            (e) => e.fn.sum<number>("gpu_count").as("gpus"),
            (e) => e.fn.count<number>("lease_owner").distinct().as("instances"),
          ])
          .where("status", "=", "running")
          .groupBy("org_id")
          .as("counts"),
      (join) => join.onRef("counts.org_id", "=", "orgs.id"),
    )
    .select([
      "orgs.id",
      "orgs.max_running_jobs",
      "orgs.max_gpus",
      "orgs.max_instances",
      "counts.jobs",
      "counts.gpus",
      "counts.instances",
    ])
    .execute();
  const counts = orgs.filter((org) => org.jobs !== null);
  const running = new Map(counts.map((org) => [org.id, Number(org.jobs)]));
  const gpus = new Map(counts.map((org) => [org.id, Number(org.gpus ?? 0)]));
  const jobRoom = new Map<string, number>();
  const gpuRoom = new Map<string, number>();
  for (const org of orgs) {
    if (org.max_running_jobs !== null) {
      jobRoom.set(org.id, Math.max(0, org.max_running_jobs - (running.get(org.id) ?? 0)));
    }
    if (org.max_gpus !== null) gpuRoom.set(org.id, Math.max(0, org.max_gpus - (gpus.get(org.id) ?? 0)));
  }
  // An instance asking for work holds none (agents run one unit at a time), so any claim for an org
  // at its instance limit would occupy one instance more.
  const instances = new Map(counts.map((org) => [org.id, Number(org.instances)]));
  const atInstanceLimit = orgs.filter(
    (org) => org.max_instances !== null && (instances.get(org.id) ?? 0) >= org.max_instances,
  );
  const full = [
    ...new Set([
      ...[...jobRoom].filter(([, room]) => room <= 0).map(([id]) => id),
      ...atInstanceLimit.map((org) => org.id),
    ]),
  ];
  return { orgs: orgs.length, running, full, jobRoom, gpuRoom };
}

/** Orders candidates by how many jobs their org runs, fewest first (null when none runs any). */
function runningOf(shares: OrgShares) {
  const busy = [...shares.running].filter(([, n]) => n > 0);
  if (busy.length === 0) return null;
  const cases = busy.map(([orgId, count]) => sql`when org_id = ${orgId} then ${count}`);
  return sql<number>`case ${sql.join(cases, sql` `)} else 0 end`;
}

/** A job asking for more GPUs than its org's GPU limit leaves waits. */
function withinGpuRoom(eb: ExpressionBuilder<Database, "jobs">, shares: OrgShares) {
  return eb.and(
    [...shares.gpuRoom].map(([orgId, room]) =>
      eb.or([eb("org_id", "!=", orgId), eb("gpu_count", "<=", room)]),
    ),
  );
}

function placementFilter(eb: ExpressionBuilder<Database, "jobs">, placement: Placement) {
  const allowed = [];
  if (placement.cpuJobs) allowed.push(eb("gpu_type", "is", null));
  if (placement.anyGpu) allowed.push(eb("gpu_type", "is not", null));
  else if (placement.gpu) {
    allowed.push(
      eb.and([eb("gpu_type", "=", placement.gpu.type), eb("gpu_count", "<=", placement.gpu.count)]),
    );
  }
  return allowed.length > 0 ? eb.or(allowed) : eb.lit(false);
}

/** How one attempt ends: the row's new status, times, error and result (null keeps run_at and result). */
interface AttemptEnding {
  jobId: string;
  leaseToken: string;
  status: JobStatus;
  runAt: number | null;
  finishedAt: number | null;
  error: string | null;
  result: string | null;
}

/** A success depends on nothing in its row. */
function successEnding(
  lease: LeaseRef,
  outcome: Extract<FinishOutcome, { status: "succeeded" }>,
  now: number,
): AttemptEnding {
  return {
    jobId: lease.jobId,
    leaseToken: lease.leaseToken,
    status: "succeeded",
    runAt: null,
    finishedAt: now,
    error: null,
    result: outcome.result ? JSON.stringify(outcome.result) : null,
  };
}

/** A failure is retried or not by the row's attempts and policy; a stop with a reason (credits, budget) keeps it over the agent's generic one. */
function rowEnding(
  row: JobRow,
  outcome: Exclude<FinishOutcome, { status: "succeeded" }>,
  now: number,
): AttemptEnding {
  // A running row always holds its lease's token; the UPDATE is guarded by it.
  const ending = { jobId: row.id, leaseToken: row.lease_token ?? "" };
  if (outcome.status === "cancelled") {
    const error =
      row.cancel_requested === 1 && row.error
        ? row.error
        : outcome.error
          ? JSON.stringify(outcome.error)
          : null;
    return { ...ending, status: "cancelled", runAt: null, finishedAt: now, error, result: null };
  }
  const decision = decideAfterFailure(toJob(row), outcome.error, now);
  return {
    ...ending,
    status: decision.status,
    runAt: decision.status === "queued" ? decision.runAt : null,
    finishedAt: decision.status === "queued" ? null : now,
    error: JSON.stringify(outcome.error),
    result: outcome.result ? JSON.stringify(outcome.result) : null,
  };
}

/** Rows per statement: 7 parameters each stay far below SQLite's and PostgreSQL's limits. */
const ENDINGS_PER_STATEMENT = 500;

/**
 * Writes the endings with one `UPDATE … FROM (VALUES …)` per 500, each guarded by its lease (a
 * row whose lease moved on is left alone and not returned). VALUES columns are named column1…7 by
 * both SQLite and PostgreSQL; parameters arrive untyped, hence the casts.
 */
async function writeEndings(
  trx: Kysely<Database>,
  endings: readonly AttemptEnding[],
): Promise<Map<string, Job>> {
  const ended = new Map<string, Job>();
  for (let start = 0; start < endings.length; start += ENDINGS_PER_STATEMENT) {
    const values = sql.join(
      endings
        .slice(start, start + ENDINGS_PER_STATEMENT)
        .map(
          (e) =>
            sql`(${e.jobId}, ${e.leaseToken}, ${e.status}, ${e.runAt}, ${e.finishedAt}, ${e.error}, ${e.result})`,
        ),
    );
    const { rows } = await sql<JobRow>`
      update jobs
      set status = v.column3,
          run_at = coalesce(cast(v.column4 as bigint), jobs.run_at),
          finished_at = cast(v.column5 as bigint),
          error = v.column6,
          result = coalesce(v.column7, jobs.result),
          lease_owner = null,
          lease_token = null,
          lease_expires_at = null
      from (values ${values}) as v
      where jobs.id = v.column1 and jobs.lease_token = v.column2 and jobs.status = 'running'
      returning *`.execute(trx);
    for (const row of rows) ended.set(row.id, toJob(row));
  }
  return ended;
}

type LogRow = LogEntry & { job_id: string; org_id: string };

/** Log lines per statement (7 parameters each). */
const LOG_ROWS_PER_STATEMENT = 1_000;

/** Log entries are numbered per attempt, so lines re-sent after a lost response are stored once. */
async function insertLogRows(db: Kysely<Database>, rows: readonly LogRow[]): Promise<void> {
  for (let start = 0; start < rows.length; start += LOG_ROWS_PER_STATEMENT) {
    await db
      .insertInto("job_logs")
      .values(rows.slice(start, start + LOG_ROWS_PER_STATEMENT))
      .onConflict((oc) => oc.columns(["job_id", "attempt", "seq"]).doNothing())
      .execute();
  }
}
