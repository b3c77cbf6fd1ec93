import type { TensorDockLocation } from "../../src/providers/tensordock/tensordock-client.ts";
import { FaultQueue, startEmulatorServer } from "./http.ts";

/**
 * TensorDock's v2 API as ../shared/reference/providers.md describes it: bearer token, JSON:API
 * envelopes, `GET /locations`. The `resources` shape is not confirmed by the reference.
 */
export const TENSORDOCK_LOCATIONS: TensorDockLocation[] = [
  {
    id: "loc-us-chicago-1",
    city: "Chicago",
    country: "United States",
    gpus: [
      {
        v0Name: "h100-sxm5-80gb",
        max_count: 8,
        price_per_hr: 2.2,
        resources: { max_vcpus: 128, max_ram_gb: 1024 },
      },
      {
        v0Name: "geforcertx4090-pcie-24gb",
        max_count: 4,
        price_per_hr: 0.35,
        resources: { max_vcpus: 32, max_ram_gb: 128 },
      },
    ],
  },
  {
    id: "loc-de-frankfurt-1",
    city: "Frankfurt",
    country: "Germany",
    gpus: [{ v0Name: "l40-pcie-48gb", max_count: 2, price_per_hr: 0.9, resources: null }],
  },
];

export interface TensorDockEmulator {
  url: string;
  token: string;
  faults: FaultQueue;
  close(): Promise<void>;
}

export async function startTensorDockEmulator(token = "td_test_token"): Promise<TensorDockEmulator> {
  const faults = new FaultQueue();
  const server = await startEmulatorServer(faults, (request, reply) => {
    if (request.key !== token) return reply(401, { errors: [{ status: "401", title: "Unauthorized" }] });
    if (request.method === "GET" && request.url.pathname === "/api/v2/locations") {
      return reply(200, { data: { locations: TENSORDOCK_LOCATIONS } });
    }
    reply(404, { errors: [{ status: "404", title: "Not Found" }] });
  });
  return { url: `${server.origin}/api/v2`, token, faults, close: server.close };
}
