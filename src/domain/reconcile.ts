import type { InstanceState } from "./instance.ts";

/** Labels every instance carries at its provider, so a reconciler finds Hangar's own among the rest. */
export const DEPLOYMENT_LABEL = "hangar_deployment";
export const INSTANCE_LABEL = "hangar_instance";

/**
 * Providers without labels of their own (a local process, a RunPod pod) carry them as environment
 * variables, `HANGAR_LABEL_<KEY>=value`, and read them back from the instance's environment.
 */
const LABEL_ENV_PREFIX = "HANGAR_LABEL_";

export function labelsAsEnv(labels: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(labels).map(([key, value]) => [`${LABEL_ENV_PREFIX}${key.toUpperCase()}`, value]),
  );
}

/** The labels among `KEY=VALUE` environment entries. */
export function labelsFromEnv(entries: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const entry of entries) {
    if (!entry.startsWith(LABEL_ENV_PREFIX)) continue;
    const eq = entry.indexOf("=");
    labels[entry.slice(LABEL_ENV_PREFIX.length, eq).toLowerCase()] = entry.slice(eq + 1);
  }
  return labels;
}

/** Whether an instance's labels include every one of `wanted`. */
export function hasLabels(
  labels: Readonly<Record<string, string>>,
  wanted: Readonly<Record<string, string>>,
) {
  return Object.entries(wanted).every(([key, value]) => labels[key] === value);
}

/** An instance as its provider lists it. */
export interface ListedInstance {
  providerInstanceId: string;
  labels: Readonly<Record<string, string>>;
}

export interface Stray {
  providerInstanceId: string;
  why: string;
}

/**
 * The provider's instances of this deployment that must not be running: those the database does not
 * know, and those it has already ended (a termination that never reached the provider). The
 * provider's own list is the truth about what is billed, never the database alone.
 */
export function strays(
  listed: readonly ListedInstance[],
  deployment: string,
  stateOf: (instanceId: string) => InstanceState | undefined,
): Stray[] {
  const found: Stray[] = [];
  for (const instance of listed) {
    if (instance.labels[DEPLOYMENT_LABEL] !== deployment) continue;
    const instanceId = instance.labels[INSTANCE_LABEL];
    const state = instanceId === undefined ? undefined : stateOf(instanceId);
    if (state === undefined) {
      found.push({
        providerInstanceId: instance.providerInstanceId,
        why: `unknown to the database (${instanceId ?? "no instance label"})`,
      });
    } else if (state === "terminated") {
      found.push({
        providerInstanceId: instance.providerInstanceId,
        why: `${instanceId} was ended but is still running`,
      });
    }
  }
  return found;
}

/**
 * Terminations of strays not confirmed yet. A stray still listed after a termination request counts
 * as a failure, as does a request that failed; each failure doubles the pause before the next try.
 * From the second failure on it is an alert, so an instance that will not die is never silent.
 */
export class TerminationTracker {
  readonly #entries = new Map<
    string,
    {
      requested: boolean;
      failures: number;
      firstFailedAt: number | null;
      nextTryAt: number;
      lastError: string | null;
    }
  >();
  readonly #basePauseMs: number;
  readonly #maxPauseMs: number;

  constructor(basePauseMs: number, maxPauseMs = 15 * 60_000) {
    this.#basePauseMs = basePauseMs;
    this.#maxPauseMs = maxPauseMs;
  }

  /** Called once per pass for every stray still listed: whether to ask the provider (again) now. */
  shouldRequest(providerInstanceId: string, now: number): boolean {
    const entry = this.#entries.get(providerInstanceId);
    if (entry?.requested) this.failed(providerInstanceId, "still running after a termination request", now);
    return now >= (this.#entries.get(providerInstanceId)?.nextTryAt ?? 0);
  }

  requested(providerInstanceId: string): void {
    const entry = this.#entries.get(providerInstanceId);
    if (entry) entry.requested = true;
    else
      this.#entries.set(providerInstanceId, {
        requested: true,
        failures: 0,
        firstFailedAt: null,
        nextTryAt: 0,
        lastError: null,
      });
  }

  failed(providerInstanceId: string, error: string, now: number): void {
    const failures = (this.#entries.get(providerInstanceId)?.failures ?? 0) + 1;
    this.#entries.set(providerInstanceId, {
      requested: false,
      failures,
      firstFailedAt: this.#entries.get(providerInstanceId)?.firstFailedAt ?? now,
      nextTryAt: now + Math.min(this.#basePauseMs * 2 ** (failures - 1), this.#maxPauseMs),
      lastError: error,
    });
  }

  /** After a pass over the ids `inPass` covers (one provider's): whatever is no longer a stray has gone. */
  keepOnly(strayIds: ReadonlySet<string>, inPass: (id: string) => boolean = () => true): void {
    for (const id of this.#entries.keys()) if (inPass(id) && !strayIds.has(id)) this.#entries.delete(id);
  }

  /** Instances whose termination failed at least twice. */
  alerts(): { providerInstanceId: string; failures: number; firstFailedAt: number; lastError: string }[] {
    return [...this.#entries.entries()]
      .filter(([, entry]) => entry.failures >= 2)
      .map(([providerInstanceId, entry]) => ({
        providerInstanceId,
        failures: entry.failures,
        firstFailedAt: entry.firstFailedAt!,
        lastError: entry.lastError!,
      }));
  }
}
