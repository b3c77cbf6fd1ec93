import { type Kysely, type SelectQueryBuilder, sql } from "kysely";
import type { Budget, BudgetAction } from "../domain/budget.ts";
import {
  type Account,
  type Balances,
  balancesOf,
  type EntryKind,
  type LedgerEntry,
  type NewLedgerEntry,
} from "../domain/ledger.ts";
import type { UsageRecord } from "../domain/usage.ts";
import type { BudgetEvent, InstanceToBill, LedgerStore, OpenHold, UsageQuery, UsageRow } from "./accounts.ts";
import type { Database } from "./schema.ts";
import { insertLedgerRows } from "./usage-writes.ts";

const DAY_MS = 86_400_000;

/** Sums come back as numeric strings from PostgreSQL and as numbers from SQLite. */
const num = (value: unknown): number => Number(value ?? 0);

const userScope = (userId: string | null) => userId ?? "";

export class KyselyLedger implements LedgerStore {
  readonly #db: Kysely<Database>;
  readonly #lockRows: boolean;

  constructor(db: Kysely<Database>, lockRows: boolean) {
    this.#db = db;
    this.#lockRows = lockRows;
  }

  async post(entries: readonly NewLedgerEntry[], now: number): Promise<number> {
    if (entries.length === 0) return 0;
    return this.#db.transaction().execute((trx) => insertLedgerRows(trx, entries, now));
  }

  async postHoldIfCovered(
    hold: NewLedgerEntry,
    now: number,
  ): Promise<{ posted: boolean; balances: Balances }> {
    return this.#db.transaction().execute(async (trx) => {
      // The org row is the lock that orders every hold of the org (SQLite's write transaction already does).
      await trx
        .selectFrom("orgs")
        .select("id")
        .where("id", "=", hold.orgId)
        .$if(this.#lockRows, (q) => q.forUpdate())
        .execute();
      const balances = await balancesIn(trx, hold.orgId);
      if (balances.available < hold.amount) return { posted: false, balances };
      await insertLedgerRows(trx, [hold], now);
      return { posted: true, balances };
    });
  }

  balances(orgId: string): Promise<Balances> {
    return balancesIn(this.#db, orgId);
  }

  async listEntries(orgId: string, limit: number): Promise<LedgerEntry[]> {
    const rows = await this.#db
      .selectFrom("ledger_entries")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("created_at", "desc")
      .orderBy("entry_key", "desc")
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      key: row.entry_key,
      kind: row.kind as EntryKind,
      from: row.from_account as Account,
      to: row.to_account as Account,
      amount: num(row.amount_micro),
      subject: row.subject,
      userId: row.user_id,
      createdAt: row.created_at,
      note: row.note,
    }));
  }

  async heldFor(orgId: string, subject: string): Promise<number> {
    return (await balancesIn(this.#db, orgId, (q) => q.where("subject", "=", subject))).held;
  }

  async openHolds(limit: number): Promise<OpenHold[]> {
    const rows = await this.#db
      .selectFrom("ledger_entries as h")
      .select(["h.org_id", "h.subject", "h.user_id", "h.created_at"])
      .where("h.kind", "=", "hold")
      .where("h.entry_key", "=", sql<string>`'hold:' || h.subject`)
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom("ledger_entries as s")
              .select("s.entry_key")
              .whereRef("s.org_id", "=", "h.org_id")
              .where((eb) =>
                eb.or([
                  eb("s.entry_key", "=", sql<string>`'release:' || h.subject`),
                  eb("s.entry_key", "=", sql<string>`'overrun:' || h.subject`),
                ]),
              ),
          ),
        ),
      )
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      subject: row.subject!,
      userId: row.user_id,
      createdAt: row.created_at,
    }));
  }

  async spentSince(orgId: string, since: number, userId?: string): Promise<number> {
    const balances = await balancesIn(this.#db, orgId, (q) =>
      q
        .where("created_at", ">=", since)
        .where((eb) => eb.or([eb("from_account", "=", "spent"), eb("to_account", "=", "spent")]))
        .$if(userId !== undefined, (w) => w.where("user_id", "=", userId!)),
    );
    return balances.spent;
  }

  async usage(query: UsageQuery): Promise<UsageRow[]> {
    const group =
      query.groupBy === "day"
        ? sql<string>`(ended_at / ${sql.lit(DAY_MS)})`
        : sql<string>`coalesce(${sql.ref(query.groupBy === "user" ? "user_id" : query.groupBy)}, '')`;
    const rows = await this.#db
      .selectFrom("usage_records")
      .select([
        group.as("grp"),
        (eb) => eb.fn.countAll<number>().as("attempts"),
        (eb) => eb.fn.sum<number>(eb("ended_at", "-", eb.ref("started_at"))).as("busy_ms"),
        (eb) => eb.fn.sum<number>("cost_micro").as("cost_micro"),
      ])
      .where("org_id", "=", query.orgId)
      .where("ended_at", ">=", query.from)
      .where("ended_at", "<", query.to)
      .groupBy(group)
      .orderBy(group)
      .execute();
    return rows.map((row) => ({
      group:
        query.groupBy === "day"
          ? new Date(num(row.grp) * DAY_MS).toISOString().slice(0, 10)
          : String(row.grp),
      attempts: num(row.attempts),
      busyMs: num(row.busy_ms),
      costMicro: num(row.cost_micro),
    }));
  }

  async usageOfJob(orgId: string, jobId: string): Promise<UsageRecord[]> {
    const rows = await this.#db
      .selectFrom("usage_records")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("job_id", "=", jobId)
      .orderBy("started_at")
      .execute();
    return rows.map((row) => ({
      jobId: row.job_id,
      attempt: row.attempt,
      startedAt: row.started_at,
      endedAt: row.ended_at,
      orgId: row.org_id,
      userId: row.user_id,
      batchId: row.batch_id,
      model: row.model,
      provider: row.provider,
      instanceId: row.instance_id,
      gpuType: row.gpu_type,
      gpuCount: row.gpu_count,
      pricePerHourMicro: num(row.price_micro_per_hour),
      share: row.share,
      costMicro: num(row.cost_micro),
    }));
  }

  async instancesToBill(limit: number): Promise<InstanceToBill[]> {
    const rows = await this.#db
      .selectFrom("instances")
      .select((eb) => [
        "id",
        "org_id",
        "price_per_hour",
        "created_at",
        "terminated_at",
        eb
          .selectFrom("usage_records")
          .select((u) => u.fn.coalesce(u.fn.sum<number>("cost_micro"), sql<number>`0`).as("used"))
          .whereRef("usage_records.instance_id", "=", "instances.id")
          .as("used"),
      ])
      .where("terminated_at", "is not", null)
      .where("billed_at", "is", null)
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      id: row.id,
      orgId: row.org_id,
      pricePerHour: row.price_per_hour,
      lifetimeMs: Math.max(0, (row.terminated_at ?? row.created_at) - row.created_at),
      usedMicro: num(row.used),
    }));
  }

  async markInstanceBilled(id: string, entry: NewLedgerEntry | null, now: number): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      if (entry) await insertLedgerRows(trx, [entry], now);
      await trx.updateTable("instances").set({ billed_at: now }).where("id", "=", id).execute();
    });
  }

  async putBudget(budget: Budget, now: number): Promise<void> {
    const values = {
      monthly_limit_micro: budget.monthlyLimitMicro,
      action: budget.action,
      webhook_url: budget.webhookUrl,
      updated_at: now,
    };
    await this.#db
      .insertInto("budgets")
      .values({ org_id: budget.orgId, user_scope: userScope(budget.userId), ...values })
      .onConflict((oc) => oc.columns(["org_id", "user_scope"]).doUpdateSet(values))
      .execute();
  }

  async listBudgets(orgId?: string): Promise<Budget[]> {
    const rows = await this.#db
      .selectFrom("budgets")
      .selectAll()
      .$if(orgId !== undefined, (q) => q.where("org_id", "=", orgId!))
      .orderBy("org_id")
      .orderBy("user_scope")
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      userId: row.user_scope === "" ? null : row.user_scope,
      monthlyLimitMicro: num(row.monthly_limit_micro),
      action: row.action as BudgetAction,
      webhookUrl: row.webhook_url,
    }));
  }

  async deleteBudget(orgId: string, userId: string | null): Promise<boolean> {
    const result = await this.#db
      .deleteFrom("budgets")
      .where("org_id", "=", orgId)
      .where("user_scope", "=", userScope(userId))
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async recordBudgetEvent(event: BudgetEvent): Promise<boolean> {
    const result = await this.#db
      .insertInto("budget_events")
      .values({
        org_id: event.orgId,
        user_scope: userScope(event.userId),
        month: event.month,
        threshold: event.threshold,
        spent_micro: event.spentMicro,
        limit_micro: event.limitMicro,
        created_at: event.createdAt,
      })
      .onConflict((oc) => oc.columns(["org_id", "user_scope", "month", "threshold"]).doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  async listBudgetEvents(orgId: string, limit: number): Promise<BudgetEvent[]> {
    const rows = await this.#db
      .selectFrom("budget_events")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("created_at", "desc")
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      userId: row.user_scope === "" ? null : row.user_scope,
      month: row.month,
      threshold: row.threshold,
      spentMicro: num(row.spent_micro),
      limitMicro: num(row.limit_micro),
      createdAt: row.created_at,
    }));
  }
}

type EntriesQuery = SelectQueryBuilder<Database, "ledger_entries", object>;

/** Each account's balance over an org's entries (narrowed by `which`): sums per account pair, added up. */
async function balancesIn(
  db: Kysely<Database>,
  orgId: string,
  which: (query: EntriesQuery) => EntriesQuery = (query) => query,
): Promise<Balances> {
  const rows = await which(db.selectFrom("ledger_entries").where("org_id", "=", orgId))
    .select(["from_account", "to_account", (eb) => eb.fn.sum<number>("amount_micro").as("amount")])
    .groupBy(["from_account", "to_account"])
    .execute();
  return balancesOf(
    rows.map((row) => ({
      from: row.from_account as Account,
      to: row.to_account as Account,
      amount: num(row.amount),
    })),
  );
}
