import { canonicalGpu, type Offer, type OfferQuery } from "../../domain/offers.ts";
import type { OfferSource } from "../provider.ts";
import type { VastClient, VastOffer, VastSearch } from "./vast-client.ts";

/**
 * Vast's own names for each GPU type Hangar knows, as its search lists them (`gpu_name` must match
 * exactly). Names for T4, A10G and B200 are not confirmed against a live search.
 */
const VAST_GPU_NAMES: Record<string, string[]> = {
  T4: ["Tesla T4"],
  L4: ["L4"],
  A10: ["A10"],
  A10G: ["A10g"],
  L40S: ["L40S"],
  RTX3090: ["RTX 3090"],
  RTX4090: ["RTX 4090"],
  RTX5090: ["RTX 5090"],
  A40: ["A40"],
  "A100-40GB": ["A100 PCIE", "A100 SXM4"],
  "A100-80GB": ["A100 PCIE", "A100 SXM4", "A100X"],
  H100: ["H100 SXM", "H100 PCIE", "H100 NVL"],
  H200: ["H200", "H200 NVL"],
  B200: ["B200"],
};

/** The names to ask Vast for: its names of a known type, else the name as given, without vendor words. */
function vastGpuNames(wanted: string): string[] {
  const known = VAST_GPU_NAMES[canonicalGpu(wanted, 0)];
  return known ?? [wanted.replace(/\b(nvidia|geforce)\b/gi, "").trim()];
}

/** Offers asked of Vast per query: its search is cheapest first, so these are the cheapest. */
const SEARCH_LIMIT = 64;

/** Vast.ai as an offer source: the marketplace's rentable, unrented machines, on-demand or bid (spot). */
export class VastProvider implements OfferSource {
  readonly name = "vastai";
  readonly #client: VastClient;

  constructor(client: VastClient) {
    this.#client = client;
  }

  async offers(query: OfferQuery): Promise<Offer[]> {
    const kinds = query.spot === undefined ? [false, true] : [query.spot];
    const found = await Promise.all(
      kinds.map(async (spot) => {
        const offers = await this.#client.searchOffers(searchFor(query, spot));
        const fetchedAt = Date.now();
        return offers.map((offer) => toOffer(offer, spot, fetchedAt));
      }),
    );
    return found.flat().filter((offer) => offer.pricePerHour > 0);
  }
}

/** The query in Vast's search language, so the provider does the filtering it can. */
export function searchFor(query: OfferQuery, spot: boolean): VastSearch {
  const search: VastSearch = {
    rentable: { eq: true },
    rented: { eq: false },
    num_gpus: { gte: Math.max(1, query.minGpus ?? 1) },
    order: [[spot ? "min_bid" : "dph_total", "asc"]],
    type: spot ? "bid" : "on-demand",
    limit: SEARCH_LIMIT,
  };
  if (query.gpu) search.gpu_name = { in: vastGpuNames(query.gpu) };
  if (query.minGpuMemoryGb !== undefined) search.gpu_ram = { gte: query.minGpuMemoryGb * 1024 };
  return search;
}

function toOffer(offer: VastOffer, spot: boolean, fetchedAt: number): Offer {
  const gpuMemoryGb = Math.round(offer.gpu_ram / 1024);
  return {
    provider: "vastai",
    id: String(offer.id),
    gpu: canonicalGpu(offer.gpu_name, gpuMemoryGb),
    gpuCount: offer.num_gpus,
    gpuMemoryGb,
    vcpus: offer.cpu_cores,
    memoryGb: offer.cpu_ram === null ? null : Math.round(offer.cpu_ram / 1024),
    region: offer.geolocation,
    spot,
    pricePerHour: spot ? (offer.min_bid ?? 0) : offer.dph_total,
    reliability: offer.reliability,
    fetchedAt,
  };
}
