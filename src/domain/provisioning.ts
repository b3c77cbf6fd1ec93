import type { GpuAssignment } from "./instance.ts";
import { canonicalGpu, type Offer } from "./offers.ts";

/** Jobs waiting for one GPU shape, and how they asked their instance to be launched (null: the default). */
export interface GpuDemand {
  type: string;
  count: number;
  strategy: ProvisioningStrategy | null;
  jobs: number;
}

/** A live cloud instance as provisioning sees it. */
export interface GpuInstance {
  gpuType: string | null;
  gpuCount: number;
  /** Running a job now; any other live state (booting, idle) can take the next one. */
  busy: boolean;
}

/** How many instances to launch for one GPU shape, and how. */
export interface LaunchNeed {
  type: string;
  count: number;
  strategy: ProvisioningStrategy | null;
  launches: number;
}

/**
 * Instances to launch per GPU shape: the jobs waiting for it, less the live instances that will take
 * them (booting or idle, with that type and at least that many GPUs). Each instance is counted for
 * one shape only, the first it fits, so two shapes never both count on the same idle machine.
 */
export function launchNeeds(demand: readonly GpuDemand[], instances: readonly GpuInstance[]): LaunchNeed[] {
  const free = instances.filter((i) => !i.busy && i.gpuType !== null).map((i) => ({ ...i, taken: false }));
  const needs: LaunchNeed[] = [];
  for (const shape of [...demand].sort((a, b) => b.count - a.count)) {
    let covered = 0;
    for (const instance of free) {
      if (covered >= shape.jobs) break;
      if (!instance.taken && instance.gpuType === shape.type && instance.gpuCount >= shape.count) {
        instance.taken = true;
        covered++;
      }
    }
    if (shape.jobs > covered) {
      needs.push({
        type: shape.type,
        count: shape.count,
        strategy: shape.strategy,
        launches: shape.jobs - covered,
      });
    }
  }
  return needs;
}

/**
 * The offers to try for one GPU shape, in order: launchable, of that type with at least that many
 * GPUs, of the kind asked for (on-demand or spot), cheapest first; offers on machines the history
 * skips are left out. The first is the Coldstart choice; the rest are where a refused launch
 * (no capacity) goes next.
 */
export function candidateOffers(
  offers: readonly Offer[],
  need: { type: string; count: number },
  options: { launchable: (provider: string) => boolean; spot: boolean; skipped?: (offer: Offer) => boolean },
): Offer[] {
  return offers
    .filter(
      (offer) =>
        options.launchable(offer.provider) &&
        offer.gpu === need.type &&
        offer.gpuCount >= need.count &&
        offer.spot === options.spot &&
        !options.skipped?.(offer),
    )
    .sort((a, b) => a.pricePerHour - b.pricePerHour || a.provider.localeCompare(b.provider));
}

/** GPUs a job asks for, or an instance has: Hangar's type name (`RTX4090`) and how many. */
export interface GpuRequirement {
  type: string;
  count: number;
}

/** Which jobs outside batches an instance may claim, from what it has. */
export interface Placement {
  /** Jobs that ask for no GPU (this host's instances; a cloud GPU is not spent on them). */
  cpuJobs: boolean;
  /** The instance's GPUs: it takes jobs asking for this type and at most this many. */
  gpu: GpuRequirement | null;
  /** Jobs asking for any GPU (this host, when no configured cloud can launch one). */
  anyGpu: boolean;
}

/**
 * What an instance takes: this host's instances take jobs without GPUs and batches, and every GPU
 * job while no configured cloud can launch GPUs (they run here, on CPU if need be, and say so); a
 * cloud instance takes only jobs asking for its GPU type, at most as many as it has, so a rented GPU
 * is never spent on work this host could do.
 */
export function placementOf(
  instance: { gpus: readonly GpuAssignment[] },
  where: { onThisHost: boolean; cloudsLaunchGpus: boolean },
): Placement {
  const first = instance.gpus[0];
  return {
    cpuJobs: where.onThisHost,
    gpu: first
      ? { type: canonicalGpu(first.name, first.memoryMiB / 1024), count: instance.gpus.length }
      : null,
    anyGpu: where.onThisHost && !where.cloudsLaunchGpus,
  };
}

/** How a GPU shape's launch is made (the original design's names); a warm pool is set apart. */
export type ProvisioningStrategy = "coldstart" | "roundrobin" | "race";

export const PROVISIONING_STRATEGIES: readonly ProvisioningStrategy[] = ["coldstart", "roundrobin", "race"];

/**
 * The offers one launch starts. Coldstart and RoundRobin start the first candidate (RoundRobin's
 * candidates already leave out offers that failed to boot lately, so it moves on to the next).
 * Race starts `width` at once, on different hosts (or offers, where the host is unknown until
 * launch), so one slow or broken machine cannot hold the race back.
 */
export function offersToStart(
  candidates: readonly Offer[],
  strategy: ProvisioningStrategy,
  width: number,
): Offer[] {
  if (strategy !== "race") return candidates.slice(0, 1);
  const hosts = new Set<string>();
  const picked: Offer[] = [];
  for (const offer of candidates) {
    const host = `${offer.provider}/${offer.machineId ?? offer.id}`;
    if (hosts.has(host)) continue;
    hosts.add(host);
    picked.push(offer);
    if (picked.length >= width) break;
  }
  return picked;
}

/** A race's member as the scheduler sees it: when its agent registered, whether it works or has ended. */
export interface RaceMember {
  instanceId: string;
  registeredAt: number | null;
  /** Running a job: it took work before the race was settled, so it is not ended. */
  busy: boolean;
  ended: boolean;
  launchedAt: number;
  pricePerHour: number;
}

/**
 * The race's outcome so far: the member that took the work wins, else the one whose agent registered
 * first (a later one can be first to ask for work); every other member still up and not working
 * loses and is ended at once, and what they cost is the race's waste (billed seconds × price). A
 * member that took a job meanwhile keeps it: ending it would waste the work.
 */
export function settleRace(
  members: readonly RaceMember[],
  now: number,
): { winner: string; losers: string[]; wasteUsd: number } | null {
  const registered = members
    .filter((m) => m.registeredAt !== null && !m.ended)
    .sort((a, b) => Number(b.busy) - Number(a.busy) || a.registeredAt! - b.registeredAt!);
  const winner = registered[0];
  if (!winner) return null;
  const losers = members.filter((m) => m !== winner && !m.ended && !m.busy);
  const wasteUsd = losers.reduce((sum, m) => sum + ((now - m.launchedAt) / 3_600_000) * m.pricePerHour, 0);
  return { winner: winner.instanceId, losers: losers.map((m) => m.instanceId), wasteUsd };
}

/**
 * A pool of cloud instances of one GPU type: at least `min` kept up whether work waits or not, at
 * most `max` at once (null: no cap), and idle ones beyond `min` ended after `idleS` (null: the
 * deployment's idle timeout). Without a pool, a type scales to zero.
 */
export interface WarmPool {
  type: string;
  min: number;
  max: number | null;
  idleS: number | null;
}

/**
 * `HANGAR_WARM_POOL`: `TYPE:MIN[:MAX[:IDLE_S]]` separated by commas (`RTX4090:1:4:300,H100:0:2`);
 * empty: none. Throws with the offending part named.
 */
export function parseWarmPools(text: string | undefined): WarmPool[] {
  if (!text?.trim()) return [];
  return text.split(",").map((part) => {
    const match = /^\s*([^:\s]+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*(?::\s*(\d+)\s*)?)?$/.exec(part);
    const number = (text: string | undefined) => (text === undefined ? null : Number(text));
    const max = number(match?.[3]);
    if (!match || (max !== null && (max < 1 || max < Number(match[2])))) {
      throw new Error(
        `HANGAR_WARM_POOL: "${part}" is not TYPE:MIN[:MAX[:IDLE_S]] with MAX ≥ MIN and ≥ 1 (e.g. RTX4090:1:4:300)`,
      );
    }
    return { type: match[1]!, min: Number(match[2]), max, idleS: number(match[4]) };
  });
}

/** Launch needs cut so that no pool goes past its `max` (instances up, booting ones included). */
export function capByPools(
  needs: readonly LaunchNeed[],
  pools: readonly WarmPool[],
  instances: readonly GpuInstance[],
): LaunchNeed[] {
  const room = new Map(
    pools
      .filter((pool) => pool.max !== null)
      .map((pool) => [pool.type, pool.max! - instances.filter((i) => i.gpuType === pool.type).length]),
  );
  return needs.flatMap((need) => {
    const left = room.get(need.type);
    if (left === undefined) return [need];
    const launches = Math.min(need.launches, Math.max(0, left));
    room.set(need.type, left - launches);
    return launches > 0 ? [{ ...need, launches }] : [];
  });
}

/** Launches each pool needs to have `min` instances of its type up (booting ones count). */
export function warmPoolNeeds(pools: readonly WarmPool[], instances: readonly GpuInstance[]): LaunchNeed[] {
  return pools.flatMap((pool) => {
    const up = instances.filter((i) => i.gpuType === pool.type).length;
    return up < pool.min ? [{ type: pool.type, count: 1, strategy: null, launches: pool.min - up }] : [];
  });
}
