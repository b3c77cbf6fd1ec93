import type { Kysely } from "kysely";
import type { Job } from "../domain/job.ts";
import type { NewLedgerEntry } from "../domain/ledger.ts";
import { attemptUsage, usageCharge } from "../domain/usage.ts";
import type { Database } from "./schema.ts";

/** Rows per INSERT: 15 columns each stays well under SQLite's bound-parameter limit. */
const CHUNK = 1000;

function ledgerRow(entry: NewLedgerEntry, now: number): Database["ledger_entries"] {
  return {
    org_id: entry.orgId,
    entry_key: entry.key,
    kind: entry.kind,
    from_account: entry.from,
    to_account: entry.to,
    amount_micro: entry.amount,
    subject: entry.subject,
    user_id: entry.userId,
    created_at: now,
    note: entry.note,
  };
}

export async function insertLedgerRows(
  db: Kysely<Database>,
  entries: readonly NewLedgerEntry[],
  now: number,
) {
  let inserted = 0;
  for (let start = 0; start < entries.length; start += CHUNK) {
    const result = await db
      .insertInto("ledger_entries")
      .values(entries.slice(start, start + CHUNK).map((entry) => ledgerRow(entry, now)))
      .onConflict((oc) => oc.columns(["org_id", "entry_key"]).doNothing())
      .executeTakeFirst();
    inserted += Number(result.numInsertedOrUpdatedRows ?? 0);
  }
  return inserted;
}

/**
 * Collects the attempts that end in one transaction (each as its job was while running) and writes
 * their usage records and charges together; both are keyed by attempt, so writing twice is a no-op.
 */
export class AttemptUsage {
  readonly #jobs: Job[] = [];

  add(runningJob: Job): void {
    this.#jobs.push(runningJob);
  }

  async write(trx: Kysely<Database>, now: number): Promise<void> {
    const usages = this.#jobs.flatMap((job) => attemptUsage(job, now) ?? []);
    if (usages.length === 0) return;
    for (let start = 0; start < usages.length; start += CHUNK) {
      await trx
        .insertInto("usage_records")
        .values(
          usages.slice(start, start + CHUNK).map((usage) => ({
            job_id: usage.jobId,
            attempt: usage.attempt,
            started_at: usage.startedAt,
            ended_at: usage.endedAt,
            org_id: usage.orgId,
            user_id: usage.userId,
            batch_id: usage.batchId,
            model: usage.model,
            provider: usage.provider,
            instance_id: usage.instanceId,
            gpu_type: usage.gpuType,
            gpu_count: usage.gpuCount,
            price_micro_per_hour: usage.pricePerHourMicro,
            share: usage.share,
            cost_micro: usage.costMicro,
          })),
        )
        .onConflict((oc) => oc.columns(["job_id", "attempt", "started_at"]).doNothing())
        .execute();
    }
    const charges = usages.flatMap((usage) => usageCharge(usage) ?? []);
    if (charges.length > 0) await insertLedgerRows(trx, charges, now);
  }
}
