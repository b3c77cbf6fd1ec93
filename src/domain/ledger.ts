/**
 * An org's credits as a double-entry ledger: every entry moves an amount from one account to another,
 * so the accounts always sum to zero and a balance is only ever the sum of entries. Each entry has a
 * key unique within its org; writing an entry twice (a retried request, a finish delivered twice)
 * is a no-op.
 */
export const ACCOUNTS = ["external", "available", "held", "spent"] as const;
export type Account = (typeof ACCOUNTS)[number];

export const ENTRY_KINDS = ["grant", "hold", "charge", "release", "refund"] as const;
export type EntryKind = (typeof ENTRY_KINDS)[number];

export interface LedgerEntry {
  orgId: string;
  key: string;
  kind: EntryKind;
  from: Account;
  to: Account;
  /** Micro-units, never negative: the direction is from → to. */
  amount: number;
  /** The run, batch or instance the entry is about. */
  subject: string | null;
  userId: string | null;
  createdAt: number;
  note: string | null;
}

export type NewLedgerEntry = Omit<LedgerEntry, "createdAt">;

/** Credits an operator gives an org. */
export const grantEntry = (
  orgId: string,
  key: string,
  amount: number,
  note: string | null,
): NewLedgerEntry => ({
  orgId,
  key: `grant:${key}`,
  kind: "grant",
  from: "external",
  to: "available",
  amount,
  subject: null,
  userId: null,
  note,
});

/** Money returned to an org for something it was charged (its reference names what). */
export const refundEntry = (
  orgId: string,
  key: string,
  amount: number,
  subject: string | null,
  note: string | null,
): NewLedgerEntry => ({
  orgId,
  key: `refund:${key}`,
  kind: "refund",
  from: "spent",
  to: "available",
  amount,
  subject,
  userId: null,
  note,
});

/** Set aside at submit: the estimate of a run or a batch. */
export const holdEntry = (
  orgId: string,
  subject: string,
  amount: number,
  userId: string | null,
): NewLedgerEntry => ({
  orgId,
  key: `hold:${subject}`,
  kind: "hold",
  from: "available",
  to: "held",
  amount,
  subject,
  userId,
  note: null,
});

/** One attempt's share of its instance, taken from its run's (or batch's) hold. */
export const attemptChargeKey = (jobId: string, attempt: number, startedAt: number) =>
  `charge:${jobId}:${attempt}:${startedAt}`;

/** A machine's time that no run used (boot, idle in a warm pool): charged to the org that owns it. */
export const idleChargeEntry = (orgId: string, instanceId: string, amount: number): NewLedgerEntry => ({
  orgId,
  key: `idle:${instanceId}`,
  kind: "charge",
  from: "available",
  to: "spent",
  amount,
  subject: instanceId,
  userId: null,
  note: "instance time no run used",
});

/**
 * Ends a hold once its work has ended: what is left goes back to the available balance, and a run
 * that cost more than its hold has the difference taken from the available balance. Amounts are
 * positive except a release of 0, which marks a hold that was used exactly.
 */
export function settleEntry(
  orgId: string,
  subject: string,
  heldRemaining: number,
  userId: string | null,
): NewLedgerEntry {
  // A release of 0 still marks the hold settled.
  return heldRemaining >= 0
    ? {
        orgId,
        key: `release:${subject}`,
        kind: "release",
        from: "held",
        to: "available",
        amount: heldRemaining,
        subject,
        userId,
        note: null,
      }
    : {
        orgId,
        key: `overrun:${subject}`,
        kind: "hold",
        from: "available",
        to: "held",
        amount: -heldRemaining,
        subject,
        userId,
        note: "cost beyond the estimate",
      };
}

export type Balances = Record<Account, number>;

/** Each account's balance from a list of entries (or of per-account sums). */
export function balancesOf(entries: Iterable<Pick<LedgerEntry, "from" | "to" | "amount">>): Balances {
  const balances: Balances = { external: 0, available: 0, held: 0, spent: 0 };
  for (const entry of entries) {
    balances[entry.from] -= entry.amount;
    balances[entry.to] += entry.amount;
  }
  return balances;
}
