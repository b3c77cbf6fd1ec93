/**
 * The simulated market's offers and behaviour, and how each launch's fate is drawn from them. Pure:
 * every draw takes its random source, so a benchmark with a seeded source repeats exactly.
 *
 * The defaults follow what GPU clouds are known for (../shared/reference/providers.md, and the
 * mature tools' issue trackers): boot times with a long tail (log-normal), a share of launches that
 * never boot (Vast boot failures such as `OCI runtime create failed`), a share stuck provisioning
 * for good (RunPod pods that never get a machine), spot instances taken back at random (an
 * exponential hazard per hour), API calls that fail (5xx, 429, timeouts, including a create whose
 * answer is lost after the instance was made — the case that leaks instances), and launches refused
 * for want of capacity (the offer's machines were taken between the quote and the launch).
 */
export interface SimOfferSpec {
  id: string;
  gpu: string;
  gpuCount: number;
  gpuMemoryGb: number;
  /** USD per hour for the whole machine, as quoted. */
  pricePerHour: number;
  spot: boolean;
  region: string;
  /** Machines behind the offer; each launch lands on one of them. */
  hosts: number;
}

export interface SimBehaviour {
  /** Median seconds from launch to a running machine. */
  bootMedianS: number;
  /** Log-normal shape: 0.9 puts the p90 at about 3.2× the median. */
  bootSigma: number;
  /** Launches whose machine never boots (they end `failed` after their boot time). */
  bootFailureRate: number;
  /** Launches that stay booting for good (stuck provisioning). */
  stuckRate: number;
  /** Spot instances taken back per running hour. */
  preemptionsPerHour: number;
  /** Share of API calls that fail: a 5xx, a 429, or a timeout. */
  apiFaultRate: number;
  /**
   * Share of the launches the API answered that are refused for want of capacity: every machine
   * behind the offer was taken since it was quoted (Vast's `no_such_ask`, RunPod's "no longer any
   * instances available", TensorDock's "out of stock"). Nothing is made; another offer may launch.
   */
  noCapacityRate: number;
  /** What the bill adds to the quote (0.02: the created instance costs 2% more than quoted). */
  billedOverQuote: number;
  /** Simulated seconds per real second: 60 makes a one-minute boot take one second. */
  timeScale: number;
}

export interface SimMarket {
  offers: SimOfferSpec[];
  behaviour: SimBehaviour;
}

export const DEFAULT_SIM_MARKET: SimMarket = {
  offers: [
    {
      id: "sim-4090-a",
      gpu: "RTX4090",
      gpuCount: 1,
      gpuMemoryGb: 24,
      pricePerHour: 0.34,
      spot: false,
      region: "eu-north",
      hosts: 6,
    },
    {
      id: "sim-4090-b",
      gpu: "RTX4090",
      gpuCount: 1,
      gpuMemoryGb: 24,
      pricePerHour: 0.39,
      spot: false,
      region: "us-east",
      hosts: 6,
    },
    {
      id: "sim-4090-c",
      gpu: "RTX4090",
      gpuCount: 1,
      gpuMemoryGb: 24,
      pricePerHour: 0.44,
      spot: false,
      region: "ap-south",
      hosts: 4,
    },
    {
      id: "sim-4090-spot",
      gpu: "RTX4090",
      gpuCount: 1,
      gpuMemoryGb: 24,
      pricePerHour: 0.2,
      spot: true,
      region: "eu-north",
      hosts: 6,
    },
    {
      id: "sim-a100",
      gpu: "A100-80GB",
      gpuCount: 1,
      gpuMemoryGb: 80,
      pricePerHour: 1.39,
      spot: false,
      region: "us-east",
      hosts: 4,
    },
    {
      id: "sim-h100x8",
      gpu: "H100",
      gpuCount: 8,
      gpuMemoryGb: 80,
      pricePerHour: 21.5,
      spot: false,
      region: "us-west",
      hosts: 2,
    },
  ],
  behaviour: {
    bootMedianS: 60,
    bootSigma: 0.9,
    bootFailureRate: 0.1,
    stuckRate: 0.03,
    preemptionsPerHour: 0.1,
    apiFaultRate: 0,
    noCapacityRate: 0,
    billedOverQuote: 0.02,
    timeScale: 1,
  },
};

export type BootFate = { outcome: "ready" | "failed"; afterS: number } | { outcome: "stuck" };

/** How one launch will go: stuck for good, or ready/failed after a log-normal boot time. */
export function drawBootFate(behaviour: SimBehaviour, random: () => number): BootFate {
  const roll = random();
  if (roll < behaviour.stuckRate) return { outcome: "stuck" };
  const afterS = logNormal(behaviour.bootMedianS, behaviour.bootSigma, random);
  return { outcome: roll < behaviour.stuckRate + behaviour.bootFailureRate ? "failed" : "ready", afterS };
}

/** Running seconds until a spot instance is taken back; infinite when it never is. */
export function drawPreemptionAfterS(perHour: number, random: () => number): number {
  if (perHour <= 0) return Number.POSITIVE_INFINITY;
  return (-Math.log(1 - random()) / perHour) * 3600;
}

export type ApiFault = "server_error" | "rate_limited" | "timeout";

/** Every fault the market injects: a failed API call, a launch refused for capacity, a preemption. */
export type SimFault = ApiFault | "no_capacity" | "preemption";

/** Whether one API call fails, and how. */
export function drawApiFault(rate: number, random: () => number): ApiFault | null {
  if (random() >= rate) return null;
  const kinds: ApiFault[] = ["server_error", "rate_limited", "timeout"];
  return kinds[Math.floor(random() * kinds.length)]!;
}

/**
 * Whether a launch the API answered finds no capacity. Draws nothing at a rate of 0, so a seeded
 * market without this fault repeats exactly as it did before the fault existed.
 */
export function drawNoCapacity(rate: number, random: () => number): boolean {
  return rate > 0 && random() < rate;
}

/** A log-normal draw with the given median (Box–Muller for the normal part). */
export function logNormal(median: number, sigma: number, random: () => number): number {
  const u = 1 - random();
  const v = random();
  const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  return median * Math.exp(sigma * normal);
}

/** A seeded random source (mulberry32), for runs that repeat. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
