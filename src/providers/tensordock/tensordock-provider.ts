import { canonicalGpu, machinePrice, type Offer, type OfferQuery } from "../../domain/offers.ts";
import type { OfferSource } from "../provider.ts";
import type { TensorDockClient, TensorDockGpu, TensorDockLocation } from "./tensordock-client.ts";

/** TensorDock as an offer source: every location's GPUs, on-demand virtual machines (no spot). */
export class TensorDockProvider implements OfferSource {
  readonly name = "tensordock";
  readonly #client: TensorDockClient;

  constructor(client: TensorDockClient) {
    this.#client = client;
  }

  async offers(query: OfferQuery): Promise<Offer[]> {
    if (query.spot === true) return [];
    const gpuCount = Math.max(1, query.minGpus ?? 1);
    const locations = await this.#client.locations();
    const fetchedAt = Date.now();
    return locations.flatMap((location) =>
      location.gpus
        .filter((gpu) => gpu.max_count >= gpuCount)
        .map((gpu) => toOffer(location, gpu, gpuCount, fetchedAt)),
    );
  }
}

/** `geforcertx4090-pcie-24gb` → RTX4090 with 24 GB: the memory is the name's last part. */
export function gpuOfName(v0Name: string): { gpu: string; memoryGb: number } {
  const memoryGb = Number(/(\d+)gb$/i.exec(v0Name)?.[1] ?? 0);
  const model = v0Name.replace(/^geforce/i, "").split("-")[0] ?? v0Name;
  const gpu = canonicalGpu(model, memoryGb);
  return { gpu: gpu === model ? v0Name : gpu, memoryGb };
}

function toOffer(
  location: TensorDockLocation,
  gpu: TensorDockGpu,
  gpuCount: number,
  fetchedAt: number,
): Offer {
  const { gpu: name, memoryGb } = gpuOfName(gpu.v0Name);
  return {
    provider: "tensordock",
    id: `${location.id}:${gpu.v0Name}`,
    gpu: name,
    gpuCount,
    gpuMemoryGb: memoryGb,
    vcpus: gpu.resources?.max_vcpus ?? null,
    memoryGb: gpu.resources?.max_ram_gb ?? null,
    region: `${location.city}, ${location.country}`,
    spot: false,
    pricePerHour: machinePrice(gpu.price_per_hr, gpuCount),
    reliability: null,
    fetchedAt,
  };
}
