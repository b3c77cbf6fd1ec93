import { type Kysely, type Selectable, sql } from "kysely";
import {
  type Batch,
  type BatchStatus,
  batchStatusOf,
  counterFor,
  isBatchFinished,
  type ScoreDirection,
} from "../domain/batch.ts";
import type { JobStatus } from "../domain/job.ts";
import type { JsonObject } from "../domain/json.ts";
import type { Database } from "./schema.ts";

export type BatchRow = Selectable<Database["batches"]>;

export function toBatch(row: BatchRow): Batch {
  return {
    id: row.id,
    orgId: row.org_id,
    name: row.name,
    model: row.model,
    modelVersion: row.model_version,
    status: row.status as BatchStatus,
    priority: row.priority,
    maxConcurrent: row.max_concurrent,
    counters: {
      total: row.total,
      pending: row.pending,
      running: row.running,
      completed: row.completed,
      failed: row.failed,
      cancelled: row.cancelled,
    },
    scoreName: row.score_name,
    scoreUnit: row.score_unit,
    scoreBetter: row.score_better as ScoreDirection,
    bestScore: row.best_score,
    bestJobId: row.best_job_id,
    scoreCount: row.score_count,
    scoreSum: row.score_sum,
    scoreSquareSum: row.score_square_sum,
    spec: JSON.parse(row.spec) as JsonObject,
    cancelRequested: row.cancel_requested === 1,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    artifactsAt: row.artifacts_at,
  };
}

/**
 * Moves `count` children of a batch from one status to another on the batch's counters, and settles
 * the batch's own status. Callers run it in the transaction that changed the children, so the
 * counters never disagree with the children and nothing ever has to scan them.
 */
export async function moveChildren(
  trx: Kysely<Database>,
  batchId: string,
  from: JobStatus,
  to: JobStatus,
  count: number,
  now: number,
): Promise<void> {
  const source = counterFor(from);
  const target = counterFor(to);
  if (source === target || count === 0) return;
  // Column names come from counterFor's fixed set, never from input.
  const { rows } = await sql<BatchRow>`
    update batches
    set ${sql.ref(source)} = ${sql.ref(source)} - ${count}, ${sql.ref(target)} = ${sql.ref(target)} + ${count}
    where id = ${batchId}
    returning *`.execute(trx);
  const row = rows[0];
  if (row) await settleStatus(trx, toBatch(row), now);
}

/**
 * Counter moves gathered over one transaction and applied once per batch and (from, to) pair: ending
 * 64 children of a packed unit is one counter update, not 64.
 */
export class CounterMoves {
  readonly #counts = new Map<string, { batchId: string; from: JobStatus; to: JobStatus; count: number }>();

  add(batchId: string, from: JobStatus, to: JobStatus): void {
    const key = `${batchId}\u0000${from}\u0000${to}`;
    const move = this.#counts.get(key);
    if (move) move.count++;
    else this.#counts.set(key, { batchId, from, to, count: 1 });
  }

  async apply(trx: Kysely<Database>, now: number): Promise<void> {
    for (const { batchId, from, to, count } of this.#counts.values()) {
      await moveChildren(trx, batchId, from, to, count, now);
    }
    this.#counts.clear();
  }
}

/** Adds one succeeded child's score to the running statistics and the best so far. */
export async function recordScore(
  trx: Kysely<Database>,
  batchId: string,
  jobId: string,
  score: number,
  better: ScoreDirection,
): Promise<void> {
  const improves =
    better === "lower"
      ? sql<boolean>`best_score is null or ${score} < best_score`
      : sql<boolean>`best_score is null or ${score} > best_score`;
  await sql`
    update batches
    set score_count = score_count + 1,
        score_sum = score_sum + ${score},
        score_square_sum = score_square_sum + ${score * score},
        best_job_id = case when ${improves} then ${jobId} else best_job_id end,
        best_score = case when ${improves} then ${score} else best_score end
    where id = ${batchId}`.execute(trx);
}

export async function settleStatus(trx: Kysely<Database>, batch: Batch, now: number): Promise<void> {
  if (isBatchFinished(batch.status)) return;
  const started = batch.startedAt !== null || batch.counters.running > 0;
  const status = batchStatusOf(batch.counters, batch.cancelRequested, started);
  if (status === batch.status && (batch.startedAt !== null || !started)) return;
  await trx
    .updateTable("batches")
    .set({
      status,
      ...(batch.startedAt === null && started ? { started_at: now } : {}),
      ...(isBatchFinished(status) ? { finished_at: now } : {}),
    })
    .where("id", "=", batch.id)
    .execute();
}
