import type { Principal } from "../domain/access.ts";
import { isBatchFinished } from "../domain/batch.ts";
import { type Budget, isExhausted, monthOf, reachedThresholds } from "../domain/budget.ts";
import { HangarError } from "../domain/errors.ts";
import { type GpuRequest, isTerminal } from "../domain/job.ts";
import { holdEntry, idleChargeEntry, settleEntry } from "../domain/ledger.ts";
import { costOfTime, formatMicro, toMicro, withMarkup } from "../domain/money.ts";
import { attemptUsage } from "../domain/usage.ts";
import type { AppContext } from "./context.ts";

/** What a piece of work is expected to cost, and what the figure rests on. */
export interface Estimate {
  amountMicro: number;
  pricePerHourMicro: number;
  /** `local`: this host's configured price; `offer`: the cheapest live offer; `none`: no price known. */
  basis: "local" | "offer" | "none";
}

/** What work needs: no GPU, GPUs of one type, or (a model's) a GPU with this much memory. */
export type Needs = { gpu: GpuRequest | null } | { minGpuMemoryGb: number };

/** The price per hour (with markup) work with these needs is expected to run at. */
async function expectedPrice(ctx: AppContext, needs: Needs): Promise<Omit<Estimate, "amountMicro">> {
  const markup = (price: number) => withMarkup(toMicro(price), ctx.config.priceMarkupPercent);
  const query =
    "gpu" in needs
      ? needs.gpu && { gpu: needs.gpu.type, minGpus: needs.gpu.count }
      : { minGpuMemoryGb: needs.minGpuMemoryGb, minGpus: 1 };
  if (!query) return { pricePerHourMicro: markup(ctx.config.localPrices.cpu ?? 0), basis: "local" };
  const { offers } = await ctx.offers.search(query);
  const cheapest = offers[0];
  if (!cheapest) return { pricePerHourMicro: 0, basis: "none" };
  return {
    pricePerHourMicro: markup(cheapest.pricePerHour),
    basis: cheapest.provider === "local" ? "local" : "offer",
  };
}

export async function estimate(ctx: AppContext, needs: Needs, instanceSeconds: number): Promise<Estimate> {
  const price = await expectedPrice(ctx, needs);
  return { ...price, amountMicro: costOfTime(price.pricePerHourMicro, instanceSeconds * 1000) };
}

/**
 * Refuses work that a budget or the balance cannot carry (402 with the figures), otherwise sets its
 * estimate aside under `subject` (the run or batch id the work will have).
 */
export async function holdCredits(
  ctx: AppContext,
  principal: Principal,
  subject: string,
  estimate: Estimate,
): Promise<void> {
  await refuseOverBudget(ctx, principal);
  // Even a hold of 0 is written: the work may still be charged (it ran where it cost more than
  // estimated), and the hold is what its charges are settled against.
  const hold = holdEntry(principal.orgId, subject, Math.max(0, estimate.amountMicro), principal.userId);
  if (hold.amount === 0 || !creditsChecked(ctx, principal.orgId)) {
    // Exempt orgs are held too, so their charges settle the same way; their balance may go below zero.
    await ctx.store.ledger.post([hold], ctx.now());
    return;
  }
  const { posted, balances } = await ctx.store.ledger.postHoldIfCovered(hold, ctx.now());
  if (!posted) {
    const shortfall = estimate.amountMicro - balances.available;
    throw new HangarError(
      402,
      "insufficient_credits",
      `This work is estimated at ${formatMicro(estimate.amountMicro)} (${formatMicro(estimate.pricePerHourMicro)}/h); ` +
        `the organization's available balance is ${formatMicro(balances.available)}, ${formatMicro(shortfall)} short`,
      {
        estimate: formatMicro(estimate.amountMicro),
        balance: formatMicro(balances.available),
        shortfall: formatMicro(shortfall),
        price_per_hour: formatMicro(estimate.pricePerHourMicro),
      },
    );
  }
}

/** Whether an org's work must be covered by its balance (HANGAR_CREDIT_CHECKS). */
function creditsChecked(ctx: AppContext, orgId: string): boolean {
  const { creditChecks } = ctx.config;
  return creditChecks === "all" || (creditChecks === "tenants" && orgId !== ctx.defaultOrgId);
}

async function refuseOverBudget(ctx: AppContext, principal: Principal): Promise<void> {
  const budgets = await ctx.store.ledger.listBudgets(principal.orgId);
  const month = monthOf(ctx.now());
  for (const budget of budgets) {
    if (budget.userId !== null && budget.userId !== principal.userId) continue;
    const spent = await ctx.store.ledger.spentSince(principal.orgId, month.start, budget.userId ?? undefined);
    if (isExhausted(spent, budget.monthlyLimitMicro)) {
      const whose = budget.userId ? "your" : "the organization's";
      throw new HangarError(
        402,
        "budget_exhausted",
        `This month's spending (${formatMicro(spent)}) has reached ${whose} budget of ${formatMicro(budget.monthlyLimitMicro)}; new work is refused until next month or a higher budget`,
        { spent: formatMicro(spent), budget: formatMicro(budget.monthlyLimitMicro), month: month.key },
      );
    }
  }
}

/** A hold whose work no longer exists this long after it was placed is released (the submit failed). */
const ORPHAN_HOLD_MS = 60_000;

/**
 * One pass of the billing loop: settles holds of ended work, bills instances' unused time, raises
 * budget events (and stops work where a budget says so), and stops work an org can no longer pay for.
 */
export async function billingPass(ctx: AppContext): Promise<void> {
  await settleHolds(ctx);
  await billIdleTime(ctx);
  await checkBudgets(ctx);
  await stopUnpaidWork(ctx);
}

/** An org whose balance and holds no longer cover what its running work has used so far. */
async function stopUnpaidWork(ctx: AppContext): Promise<void> {
  const now = ctx.now();
  const accrued = new Map<string, number>();
  for (const job of await ctx.store.listRunningJobs(10_000)) {
    const usage = attemptUsage(job, now);
    if (usage && usage.costMicro > 0) accrued.set(job.orgId, (accrued.get(job.orgId) ?? 0) + usage.costMicro);
  }
  for (const [orgId, used] of accrued) {
    if (!creditsChecked(ctx, orgId)) continue;
    const balances = await ctx.store.ledger.balances(orgId);
    if (balances.available + balances.held - used < 0)
      await stopWork(ctx, { orgId, userId: null }, "credits_exhausted");
  }
}

async function settleHolds(ctx: AppContext): Promise<void> {
  const { store } = ctx;
  for (const hold of await store.ledger.openHolds(500)) {
    const job = await store.getJob(hold.orgId, hold.subject);
    const batch = job ? null : await store.getBatch(hold.orgId, hold.subject);
    const ended = job
      ? isTerminal(job.status)
      : batch
        ? isBatchFinished(batch.status)
        : ctx.now() - hold.createdAt > ORPHAN_HOLD_MS;
    if (!ended) continue;
    const remaining = await store.ledger.heldFor(hold.orgId, hold.subject);
    await store.ledger.post([settleEntry(hold.orgId, hold.subject, remaining, hold.userId)], ctx.now());
  }
}

async function billIdleTime(ctx: AppContext): Promise<void> {
  for (const instance of await ctx.store.ledger.instancesToBill(500)) {
    const price = withMarkup(toMicro(instance.pricePerHour ?? 0), ctx.config.priceMarkupPercent);
    const idle = costOfTime(price, instance.lifetimeMs) - instance.usedMicro;
    await ctx.store.ledger.markInstanceBilled(
      instance.id,
      idle > 0 ? idleChargeEntry(instance.orgId, instance.id, idle) : null,
      ctx.now(),
    );
  }
}

async function checkBudgets(ctx: AppContext): Promise<void> {
  const now = ctx.now();
  const month = monthOf(now);
  for (const budget of await ctx.store.ledger.listBudgets()) {
    const spent = await ctx.store.ledger.spentSince(budget.orgId, month.start, budget.userId ?? undefined);
    for (const threshold of reachedThresholds(spent, budget.monthlyLimitMicro)) {
      const event = {
        orgId: budget.orgId,
        userId: budget.userId,
        month: month.key,
        threshold,
        spentMicro: spent,
        limitMicro: budget.monthlyLimitMicro,
        createdAt: now,
      };
      if (!(await ctx.store.ledger.recordBudgetEvent(event))) continue;
      ctx.log.warn(
        { org_id: budget.orgId, user_id: budget.userId, threshold, spent: formatMicro(spent) },
        "budget threshold reached",
      );
      if (budget.webhookUrl) void notify(ctx, budget, event);
      if (threshold === 100 && budget.action === "stop") await stopWork(ctx, budget, "budget_exhausted");
    }
  }
}

async function notify(
  ctx: AppContext,
  budget: Budget,
  event: { threshold: number; spentMicro: number; month: string },
) {
  try {
    await fetch(budget.webhookUrl!, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "budget.threshold",
        org_id: budget.orgId,
        user_id: budget.userId,
        month: event.month,
        threshold_percent: event.threshold,
        spent: formatMicro(event.spentMicro),
        budget: formatMicro(budget.monthlyLimitMicro),
      }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    ctx.log.warn({ org_id: budget.orgId, err: (error as Error).message }, "budget webhook failed");
  }
}

/** Cancels the running and queued work of an org (or one user in it), saying why. */
async function stopWork(
  ctx: AppContext,
  budget: Pick<Budget, "orgId" | "userId">,
  code: string,
): Promise<void> {
  const reason = {
    code,
    message:
      code === "budget_exhausted"
        ? "Stopped: this month's budget is spent; outputs produced so far are saved"
        : "Stopped: the organization's credits ran out; outputs produced so far are saved",
    retryable: false,
  };
  const stopped = await ctx.store.requestCancelOf(budget.orgId, budget.userId, reason, ctx.now());
  for (const id of stopped) ctx.events.emit(`job:${id}`);
  ctx.log.warn(
    { org_id: budget.orgId, user_id: budget.userId, stopped: stopped.length, code },
    "work stopped",
  );
}
