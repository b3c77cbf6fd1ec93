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

/**
 * Scores of succeeded children gathered over one transaction and added once per batch to its running
 * statistics and best so far: ending 64 scored children is one batch update, not 64.
 */
export class ScoreTally {
  readonly #batches = new Map<
    string,
    { count: number; sum: number; squareSum: number; scores: [string, number][] }
  >();

  add(batchId: string, jobId: string, score: number): void {
    let tally = this.#batches.get(batchId);
    if (!tally) {
      tally = { count: 0, sum: 0, squareSum: 0, scores: [] };
      this.#batches.set(batchId, tally);
    }
    tally.count++;
    tally.sum += score;
    tally.squareSum += score * score;
    tally.scores.push([jobId, score]);
  }

  async apply(trx: Kysely<Database>): Promise<void> {
    for (const [batchId, tally] of this.#batches) {
      const batch = await trx
        .selectFrom("batches")
        .select("score_better")
        .where("id", "=", batchId)
        .executeTakeFirstOrThrow();
      const lower = (batch.score_better as ScoreDirection) === "lower";
      const [bestJob, best] = tally.scores.reduce((a, b) => ((lower ? b[1] < a[1] : b[1] > a[1]) ? b : a));
      const improves = lower
        ? sql<boolean>`best_score is null or ${best} < best_score`
        : sql<boolean>`best_score is null or ${best} > best_score`;
      await sql`
        update batches
        set score_count = score_count + ${tally.count},
            score_sum = score_sum + ${tally.sum},
            score_square_sum = score_square_sum + ${tally.squareSum},
            best_job_id = case when ${improves} then ${bestJob} else best_job_id end,
            best_score = case when ${improves} then ${best} else best_score end
        where id = ${batchId}`.execute(trx);
    }
    this.#batches.clear();
  }
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
