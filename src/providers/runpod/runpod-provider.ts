import { canonicalGpu, machinePrice, type Offer, type OfferQuery } from "../../domain/offers.ts";
import type { OfferSource } from "../provider.ts";
import type { RunPodClient, RunPodGpuType } from "./runpod-client.ts";

/**
 * RunPod as an offer source. Each GPU type yields up to four offers: community and secure cloud,
 * on-demand and spot (spot is best effort: RunPod dropped it from its docs in May 2026 but the
 * schema still quotes it). A type whose stock is `None` for the count asked is not offered at all,
 * so a stale quote cannot send a launch into "no capacity".
 */
export class RunPodProvider implements OfferSource {
  readonly name = "runpod";
  readonly #client: RunPodClient;

  constructor(client: RunPodClient) {
    this.#client = client;
  }

  async offers(query: OfferQuery): Promise<Offer[]> {
    const gpuCount = Math.max(1, query.minGpus ?? 1);
    const types = await this.#client.gpuTypes(gpuCount);
    const fetchedAt = Date.now();
    return types.flatMap((type) => offersOf(type, gpuCount, fetchedAt));
  }
}

function offersOf(type: RunPodGpuType, gpuCount: number, fetchedAt: number): Offer[] {
  const stock = type.lowestPrice?.stockStatus ?? null;
  if (stock === null || stock === "None") return [];
  if (type.maxGpuCount !== null && type.maxGpuCount < gpuCount) return [];
  const base = {
    provider: "runpod",
    gpu: canonicalGpu(type.displayName, type.memoryInGb),
    gpuCount,
    gpuMemoryGb: type.memoryInGb,
    vcpus: type.lowestPrice?.minVcpu ?? null,
    memoryGb: type.lowestPrice?.minMemory ?? null,
    region: null,
    reliability: null,
    fetchedAt,
  };
  const quotes: [cloud: "COMMUNITY" | "SECURE", spot: boolean, perGpu: number | null, available: boolean][] =
    [
      ["COMMUNITY", false, type.communityPrice, type.communityCloud],
      ["SECURE", false, type.securePrice, type.secureCloud],
      ["COMMUNITY", true, type.communitySpotPrice, type.communityCloud],
      ["SECURE", true, type.secureSpotPrice, type.secureCloud],
    ];
  return quotes
    .filter(([, , perGpu, available]) => available && perGpu !== null && perGpu > 0)
    .map(([cloud, spot, perGpu]) => ({
      ...base,
      id: `${type.id}:${cloud}${spot ? ":SPOT" : ""}`,
      spot,
      pricePerHour: machinePrice(perGpu!, gpuCount),
    }));
}
