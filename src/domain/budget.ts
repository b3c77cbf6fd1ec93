/** Monthly spending limits: the thresholds that raise events, and whether new work is refused. */
export const BUDGET_THRESHOLDS = [50, 80, 100] as const;
export type BudgetAction = "refuse" | "stop";

export interface Budget {
  orgId: string;
  /** Null: the whole org; otherwise one user's spending in it. */
  userId: string | null;
  monthlyLimitMicro: number;
  /** At 100%: refuse new work, or also stop the work that runs. */
  action: BudgetAction;
  webhookUrl: string | null;
}

/** The calendar month (UTC) a time falls in, as "2026-11", and when it began. */
export function monthOf(at: number): { key: string; start: number } {
  const date = new Date(at);
  const start = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
  return { key: new Date(start).toISOString().slice(0, 7), start };
}

/** Thresholds (in percent) that `spent` has reached. */
export function reachedThresholds(spentMicro: number, limitMicro: number): number[] {
  if (limitMicro <= 0) return [...BUDGET_THRESHOLDS];
  return BUDGET_THRESHOLDS.filter((percent) => spentMicro * 100 >= limitMicro * percent);
}

export const isExhausted = (spentMicro: number, limitMicro: number) => spentMicro >= limitMicro;
