/** What a provider answered to a launch. */
export interface LaunchedInstance {
  providerInstanceId: string;
  /** The host the instance landed on (a Vast machine id, a RunPod machine id, a hostname). */
  machineId: string;
  /** What the provider reports the created instance costs per hour, not the quote. */
  pricePerHour: number;
}

/** One launch: every instance is one. */
export interface LaunchAttempt {
  instanceId: string;
  provider: string;
  /** Null until the provider answered the launch (or when it never did). */
  machineId: string | null;
  pricePerHour: number | null;
  launchedAt: number;
  /** When its agent registered: the attempt succeeded. */
  readyAt: number | null;
  endedAt: number | null;
  /** Why an attempt that never became ready ended. */
  error: string | null;
}

export type AttemptOutcome = "ready" | "failed" | "pending";

export function outcomeOf(attempt: LaunchAttempt): AttemptOutcome {
  if (attempt.readyAt !== null) return "ready";
  return attempt.endedAt !== null ? "failed" : "pending";
}

/** When a machine is skipped: below `minSuccessRate` over at least `minAttempts` ended attempts, for `skipMs` after its last failure. */
export interface MachinePolicy {
  minAttempts: number;
  minSuccessRate: number;
  skipMs: number;
}

export interface MachineRecord {
  provider: string;
  machineId: string;
  attempts: number;
  ready: number;
  failed: number;
  pending: number;
  /** ready / (ready + failed); null while none has ended. */
  successRate: number | null;
  medianTimeToReadyMs: number | null;
  lastAttemptAt: number;
  lastError: string | null;
  /** Until when launches avoid this machine; null when they do not. */
  skippedUntil: number | null;
}

/** Launch attempts grouped per machine, worst success rate first. Attempts not yet on a machine are left out. */
export function machineHistory(
  attempts: readonly LaunchAttempt[],
  policy: MachinePolicy,
  now: number,
): MachineRecord[] {
  const byMachine = Map.groupBy(
    attempts.filter((a) => a.machineId !== null),
    (a) => `${a.provider}\u0000${a.machineId}`,
  );
  return [...byMachine.values()]
    .map((group) => recordOf(group, policy, now))
    .sort(
      (a, b) =>
        (a.successRate ?? 1) - (b.successRate ?? 1) ||
        b.lastAttemptAt - a.lastAttemptAt ||
        a.machineId.localeCompare(b.machineId),
    );
}

function recordOf(group: LaunchAttempt[], policy: MachinePolicy, now: number): MachineRecord {
  const outcomes = group.map(outcomeOf);
  const ready = outcomes.filter((o) => o === "ready").length;
  const failed = outcomes.filter((o) => o === "failed").length;
  const ended = ready + failed;
  const successRate = ended === 0 ? null : ready / ended;
  const readyTimes = group
    .filter((a) => a.readyAt !== null)
    .map((a) => a.readyAt! - a.launchedAt)
    .sort((x, y) => x - y);
  const failures = group.filter((a) => outcomeOf(a) === "failed").sort((x, y) => y.endedAt! - x.endedAt!);
  const lastFailureAt = failures[0]?.endedAt ?? null;
  const skip =
    ended >= policy.minAttempts &&
    successRate !== null &&
    successRate < policy.minSuccessRate &&
    lastFailureAt !== null &&
    now < lastFailureAt + policy.skipMs;
  return {
    provider: group[0]!.provider,
    machineId: group[0]!.machineId!,
    attempts: group.length,
    ready,
    failed,
    pending: group.length - ended,
    successRate,
    medianTimeToReadyMs:
      readyTimes.length === 0 ? null : readyTimes[Math.floor((readyTimes.length - 1) / 2)]!,
    lastAttemptAt: Math.max(...group.map((a) => a.launchedAt)),
    lastError: failures[0]?.error ?? null,
    skippedUntil: skip ? lastFailureAt + policy.skipMs : null,
  };
}
