import type { VastOffer } from "../../src/providers/vastai/vast-client.ts";
import { FaultQueue, startEmulatorServer } from "./http.ts";

/**
 * Vast.ai's REST API (`/api/v0`) as ../shared/reference/providers.md describes it: bearer key or
 * `?api_key=`, offer search on `POST /bundles/` with a field → operator map (`eq neq gt gte lt lte
 * in notin`), `order`, `type` (`on-demand` | `bid`) and `limit`; `gpu_ram`/`cpu_ram` in MB.
 * The search part of the API only.
 */
export const VAST_MARKET: VastOffer[] = [
  offer(7001, "RTX 4090", 1, 24_564, 0.31, 0.18, 0.995, "Norway, NO"),
  offer(7002, "RTX 4090", 2, 24_564, 0.58, 0.33, 0.97, "Texas, US"),
  offer(7003, "RTX 3090", 1, 24_576, 0.16, 0.09, 0.91, "Quebec, CA"),
  offer(7004, "H100 SXM", 8, 81_559, 17.6, 11.2, 0.999, "Oregon, US"),
  offer(7005, "A100 PCIE", 1, 40_960, 0.72, 0.4, 0.98, "Sweden, SE"),
  { ...offer(7006, "RTX 4090", 1, 24_564, 0.25, 0.12, 0.99, "Poland, PL"), rented: true },
];

function offer(
  id: number,
  gpuName: string,
  numGpus: number,
  gpuRamMb: number,
  dphTotal: number,
  minBid: number,
  reliability: number,
  geolocation: string,
): VastOffer {
  return {
    id,
    machine_id: id * 10,
    host_id: id * 100,
    gpu_name: gpuName,
    num_gpus: numGpus,
    gpu_ram: gpuRamMb,
    cpu_cores: 16 * numGpus,
    cpu_ram: 64_000 * numGpus,
    dph_total: dphTotal,
    min_bid: minBid,
    reliability,
    geolocation,
    rentable: true,
    rented: false,
  };
}

export interface VastEmulator {
  url: string;
  apiKey: string;
  market: VastOffer[];
  faults: FaultQueue;
  /** Search bodies received, in order. */
  searches: Record<string, unknown>[];
  close(): Promise<void>;
}

const OPERATORS: Record<string, (field: unknown, operand: unknown) => boolean> = {
  eq: (a, b) => a === b,
  neq: (a, b) => a !== b,
  gt: (a, b) => (a as number) > (b as number),
  gte: (a, b) => (a as number) >= (b as number),
  lt: (a, b) => (a as number) < (b as number),
  lte: (a, b) => (a as number) <= (b as number),
  in: (a, b) => (b as unknown[]).includes(a),
  notin: (a, b) => !(b as unknown[]).includes(a),
};
const NOT_FILTERS = new Set(["order", "type", "limit", "allocated_storage"]);

export async function startVastEmulator(apiKey = "vast_test_key"): Promise<VastEmulator> {
  const market = structuredClone(VAST_MARKET);
  const faults = new FaultQueue();
  const searches: Record<string, unknown>[] = [];

  const server = await startEmulatorServer(faults, (request, reply) => {
    if (request.key !== apiKey) {
      return reply(401, { success: false, error: "invalid_user_key", msg: "Invalid user key" });
    }
    if (request.method === "POST" && request.url.pathname === "/api/v0/bundles/") {
      let search: Record<string, unknown>;
      try {
        search = JSON.parse(request.body);
      } catch {
        return reply(400, { success: false, error: "invalid_request", msg: "Body is not JSON" });
      }
      searches.push(search);
      for (const [field, condition] of Object.entries(search)) {
        if (NOT_FILTERS.has(field)) continue;
        for (const operator of Object.keys(condition as object)) {
          if (!(operator in OPERATORS)) {
            return reply(400, {
              success: false,
              error: "invalid_request",
              msg: `Unknown operator ${operator}`,
            });
          }
        }
      }
      const matching = market.filter((candidate) =>
        Object.entries(search).every(
          ([field, condition]) =>
            NOT_FILTERS.has(field) ||
            Object.entries(condition as Record<string, unknown>).every(([operator, operand]) =>
              OPERATORS[operator]!(candidate[field as keyof VastOffer], operand),
            ),
        ),
      );
      const [[orderField, direction] = ["dph_total", "asc"]] = (search.order as [string, string][]) ?? [];
      matching.sort((a, b) => {
        const delta = Number(a[orderField as keyof VastOffer]) - Number(b[orderField as keyof VastOffer]);
        return direction === "desc" ? -delta : delta;
      });
      return reply(200, { offers: matching.slice(0, Number(search.limit ?? 64)) });
    }
    reply(404, {
      success: false,
      error: "not_found",
      msg: `No route ${request.method} ${request.url.pathname}`,
    });
  });
  return {
    url: `${server.origin}/api/v0`,
    apiKey,
    market,
    faults,
    searches,
    close: server.close,
  };
}
