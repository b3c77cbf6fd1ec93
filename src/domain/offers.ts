import { KNOWN_GPU_TYPES } from "./gpu.ts";

/** One rentable machine shape as a provider quotes it right now. */
export interface Offer {
  provider: string;
  /** The provider's own id for it (a Vast ask id, a RunPod GPU type and cloud, …). */
  id: string;
  /** Hangar's GPU type (`RTX4090`, `A100-80GB`, …) when known, else the provider's name; `CPU` without GPUs. */
  gpu: string;
  gpuCount: number;
  /** Memory of one GPU. */
  gpuMemoryGb: number;
  vcpus: number | null;
  memoryGb: number | null;
  region: string | null;
  spot: boolean;
  /** USD per hour for the whole machine (every GPU); for spot, the lowest accepted bid. */
  pricePerHour: number;
  /** Share of past rentals that went well, 0–1, where the provider publishes it. */
  reliability: number | null;
  /** Epoch ms when the provider answered. */
  fetchedAt: number;
  /** The host, where the offer names one (a Vast machine): launches skip hosts the history marks. */
  machineId?: string | null;
}

export interface OfferQuery {
  gpu?: string;
  minGpus?: number;
  minGpuMemoryGb?: number;
  maxPricePerHour?: number;
  /** true: spot only; false: on-demand only; absent: both. */
  spot?: boolean;
  provider?: string;
}

const VENDOR_WORDS = /\b(nvidia|geforce|tesla|quadro)\b/gi;
const compact = (name: string) => name.replace(/[\s_-]+/g, "").toUpperCase();

/**
 * Hangar's name for a provider's GPU name: `NVIDIA GeForce RTX 4090`, `RTX 4090` and `rtx4090` are
 * all `RTX4090`; `A100 SXM4` is `A100-80GB` or `A100-40GB` by its memory; `H100 NVL` is `H100`.
 * A GPU Hangar does not know keeps the provider's name, so it is still listed.
 */
export function canonicalGpu(providerName: string, memoryGb: number): string {
  const name = providerName.replace(VENDOR_WORDS, "").trim().toUpperCase();
  if (startsWithModel(name, "A100")) return memoryGb > 40 ? "A100-80GB" : "A100-40GB";
  // Longest first, so that A10G is not taken for an A10.
  const known = [...KNOWN_GPU_TYPES]
    .filter((type) => !type.startsWith("A100"))
    .sort((a, b) => b.length - a.length)
    .find((type) => startsWithModel(name, compact(type)));
  return known ?? providerName.trim();
}

/**
 * Whether `name` begins with `model`, ignoring spaces, `-` and `_` inside it (`RTX 4090`), where
 * the model number ends: `L40` is not an `L4`, but `H100 80GB` and `H100SXM` are `H100`s.
 */
function startsWithModel(name: string, model: string): boolean {
  let at = 0;
  for (const wanted of model) {
    while (at < name.length && /[\s_-]/.test(name[at]!)) at++;
    if (name[at] !== wanted) return false;
    at++;
  }
  return !/\d/.test(name[at] ?? "");
}

export function matchesQuery(offer: Offer, query: OfferQuery): boolean {
  if (query.provider !== undefined && offer.provider !== query.provider) return false;
  if (query.gpu !== undefined && compact(offer.gpu) !== compact(canonicalGpu(query.gpu, offer.gpuMemoryGb))) {
    return false;
  }
  if (query.minGpus !== undefined && offer.gpuCount < query.minGpus) return false;
  if (query.minGpuMemoryGb !== undefined && offer.gpuMemoryGb < query.minGpuMemoryGb) return false;
  if (query.maxPricePerHour !== undefined && offer.pricePerHour > query.maxPricePerHour) return false;
  if (query.spot !== undefined && offer.spot !== query.spot) return false;
  return true;
}

/** A price for the whole machine: per-GPU price × count, to a hundredth of a cent. */
export function machinePrice(perGpu: number, gpuCount: number): number {
  return Math.round(perGpu * gpuCount * 10_000) / 10_000;
}

/** Cheapest first; at equal price the more reliable, then the fresher quote. */
export function cheapestFirst(a: Offer, b: Offer): number {
  return (
    a.pricePerHour - b.pricePerHour ||
    (b.reliability ?? 0) - (a.reliability ?? 0) ||
    b.fetchedAt - a.fetchedAt ||
    a.provider.localeCompare(b.provider) ||
    a.id.localeCompare(b.id)
  );
}

/** How far back the market view's history reaches. */
export const MARKET_HISTORY_DAYS = 30;

/** One GPU type's price spread at one moment (the market view's history). */
export interface MarketPoint {
  takenAt: number;
  gpu: string;
  spot: boolean;
  prices: PriceSummary;
}

/** The points a market summary makes at `takenAt`: one per GPU type and kind that had offers. */
export function marketPoints(rows: readonly MarketRow[], takenAt: number): MarketPoint[] {
  return rows.flatMap((row) => [
    ...(row.onDemand ? [{ takenAt, gpu: row.gpu, spot: false, prices: row.onDemand }] : []),
    ...(row.spot ? [{ takenAt, gpu: row.gpu, spot: true, prices: row.spot }] : []),
  ]);
}

export interface PriceSummary {
  offers: number;
  min: number;
  median: number;
  p90: number;
}

export interface MarketRow {
  gpu: string;
  onDemand: PriceSummary | null;
  spot: PriceSummary | null;
  providers: string[];
}

/** Per GPU type: price spread per GPU-hour for on-demand and spot, across every provider. */
export function marketSummary(offers: readonly Offer[]): MarketRow[] {
  const byGpu = Map.groupBy(
    offers.filter((offer) => offer.gpuCount > 0),
    (offer) => offer.gpu,
  );
  return [...byGpu.entries()]
    .map(([gpu, group]) => ({
      gpu,
      onDemand: summarise(group.filter((o) => !o.spot)),
      spot: summarise(group.filter((o) => o.spot)),
      providers: [...new Set(group.map((o) => o.provider))].sort(),
    }))
    .sort((a, b) => a.gpu.localeCompare(b.gpu));
}

function summarise(offers: readonly Offer[]): PriceSummary | null {
  if (offers.length === 0) return null;
  const perGpu = offers.map((o) => o.pricePerHour / o.gpuCount).sort((a, b) => a - b);
  return {
    offers: offers.length,
    min: perGpu[0]!,
    median: nearestRank(perGpu, 50),
    p90: nearestRank(perGpu, 90),
  };
}

/** Nearest-rank percentile of sorted values: always one of them, never an interpolation. */
function nearestRank(sorted: readonly number[], percent: number): number {
  return sorted[Math.max(0, Math.ceil((percent / 100) * sorted.length) - 1)]!;
}
