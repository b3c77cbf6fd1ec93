import { buildSchema, graphql } from "graphql";
import type { RunPodGpuType } from "../../src/providers/runpod/runpod-client.ts";
import { FaultQueue, startEmulatorServer } from "./http.ts";

/**
 * RunPod's GraphQL API as ../shared/reference/providers.md describes it: bearer key or `?api_key=`,
 * catalog queries (`gpuTypes`) answered without a key, client errors as HTTP 200 with an `errors`
 * array, invalid variables as HTTP 400, bad keys as 401. The catalog part of the schema only.
 */
const SCHEMA = buildSchema(`
  type Query {
    gpuTypes(input: GpuTypeFilter): [GpuType!]!
    myself: User
  }
  type Mutation {
    podTerminate(input: PodTerminateInput!): Boolean
  }
  input PodTerminateInput { podId: String! }
  input GpuTypeFilter { id: String }
  input GpuLowestPriceInput {
    gpuCount: Int
    secureCloud: Boolean
    minMemoryInGb: Int
    minVcpuCount: Int
  }
  type GpuType {
    id: String!
    displayName: String!
    manufacturer: String
    memoryInGb: Int
    maxGpuCount: Int
    secureCloud: Boolean
    communityCloud: Boolean
    securePrice: Float
    communityPrice: Float
    secureSpotPrice: Float
    communitySpotPrice: Float
    lowestPrice(input: GpuLowestPriceInput!): LowestPrice
  }
  type LowestPrice {
    minimumBidPrice: Float
    uninterruptablePrice: Float
    minVcpu: Float
    minMemory: Float
    stockStatus: String
    countryCode: String
  }
  type User {
    id: String!
    email: String
    clientBalance: Float
    currentSpendPerHr: Float
    spendLimit: Float
  }
`);

/** A catalog entry: the GPU type's fields, and what `lowestPrice` answers from. */
export type EmulatedGpuType = Omit<RunPodGpuType, "lowestPrice" | "maxGpuCount"> & {
  maxGpuCount: number;
  stockStatus: "High" | "Medium" | "Low" | "None";
  minVcpu: number;
  minMemory: number;
};

/** A few real catalog entries (prices late 2026, USD per GPU-hour). */
export const RUNPOD_CATALOG: EmulatedGpuType[] = [
  {
    id: "NVIDIA GeForce RTX 4090",
    displayName: "RTX 4090",
    memoryInGb: 24,
    maxGpuCount: 8,
    secureCloud: true,
    communityCloud: true,
    securePrice: 0.69,
    communityPrice: 0.34,
    secureSpotPrice: 0.5,
    communitySpotPrice: 0.2,
    stockStatus: "High",
    minVcpu: 8,
    minMemory: 41,
  },
  {
    id: "NVIDIA H100 80GB HBM3",
    displayName: "H100 SXM",
    memoryInGb: 80,
    maxGpuCount: 8,
    secureCloud: true,
    communityCloud: false,
    securePrice: 2.69,
    communityPrice: null,
    secureSpotPrice: 1.75,
    communitySpotPrice: null,
    stockStatus: "Low",
    minVcpu: 16,
    minMemory: 125,
  },
  {
    id: "NVIDIA GeForce RTX 3090",
    displayName: "RTX 3090",
    memoryInGb: 24,
    maxGpuCount: 4,
    secureCloud: false,
    communityCloud: true,
    securePrice: null,
    communityPrice: 0.22,
    secureSpotPrice: null,
    communitySpotPrice: 0.11,
    stockStatus: "None",
    minVcpu: 4,
    minMemory: 24,
  },
];

export interface RunPodEmulator {
  url: string;
  apiKey: string;
  catalog: EmulatedGpuType[];
  faults: FaultQueue;
  /** Queries received, in order. */
  requests: string[];
  /** Pods by id, with their `desiredStatus`. */
  pods: Map<string, { desiredStatus: "RUNNING" | "EXITED" | "TERMINATED" }>;
  /** A running pod and the pod-scoped key RunPod would set in it (`RUNPOD_API_KEY` inside the pod). */
  addPod(podId: string): { podKey: string };
  /** The next GraphQL answer carries this error (HTTP 200), as RunPod reports no capacity and outages. */
  failNextWith(message: string, code?: string): void;
  close(): Promise<void>;
}

export async function startRunPodEmulator(apiKey = "rp_test_key"): Promise<RunPodEmulator> {
  const catalog = structuredClone(RUNPOD_CATALOG);
  const faults = new FaultQueue();
  const requests: string[] = [];
  const graphqlErrors: { message: string; code: string }[] = [];
  const pods = new Map<string, { desiredStatus: "RUNNING" | "EXITED" | "TERMINATED" }>();
  /** Pod-scoped keys: each may act on its own pod only. */
  const podKeys = new Map<string, string>();
  let caller: string | null = null;

  const rootValue = {
    gpuTypes: ({ input }: { input?: { id?: string } }) =>
      catalog
        .filter((type) => input?.id === undefined || type.id === input.id)
        .map((type) => ({
          ...type,
          lowestPrice: ({ input: wanted }: { input: { gpuCount?: number; secureCloud?: boolean } }) => {
            const count = wanted.gpuCount ?? 1;
            const secure = wanted.secureCloud ?? false;
            const price = secure ? type.securePrice : (type.communityPrice ?? type.securePrice);
            const bid = secure ? type.secureSpotPrice : (type.communitySpotPrice ?? type.secureSpotPrice);
            return {
              minimumBidPrice: bid,
              uninterruptablePrice: price,
              minVcpu: type.minVcpu * count,
              minMemory: type.minMemory * count,
              stockStatus: count > type.maxGpuCount ? "None" : type.stockStatus,
              countryCode: null,
            };
          },
        })),
    podTerminate: ({ input }: { input: { podId: string } }) => {
      const pod = pods.get(input.podId);
      if (!pod || pod.desiredStatus === "TERMINATED") throw new Error("pod not found to terminate");
      if (caller !== apiKey && podKeys.get(caller ?? "") !== input.podId) throw new Error("Unauthorized");
      pod.desiredStatus = "TERMINATED";
      return null;
    },
    myself: () => ({
      id: "user_emulated",
      email: "lab@example.org",
      clientBalance: 435.85,
      currentSpendPerHr: 0.001,
      spendLimit: 180,
    }),
  };

  const server = await startEmulatorServer(faults, async (request, reply) => {
    let parsed: { query?: string; variables?: Record<string, unknown> };
    try {
      parsed = JSON.parse(request.body);
    } catch {
      return reply(400, { errors: [{ message: "Request body is not valid JSON" }] });
    }
    const source = parsed.query ?? "";
    requests.push(source);
    const catalogOnly = /^\s*(query\s*\w*\s*(\([^)]*\))?\s*)?\{\s*gpuTypes\b/.test(source);
    const known = request.key === apiKey || podKeys.has(request.key ?? "");
    if (!known && !(catalogOnly && !request.key)) {
      return reply(401, { errors: [{ message: "Unauthorized" }] });
    }
    const injected = graphqlErrors.shift();
    if (injected) {
      return reply(200, {
        errors: [{ message: injected.message, extensions: { code: injected.code } }],
        data: null,
      });
    }
    caller = request.key;
    const result = await graphql({
      schema: SCHEMA,
      source,
      rootValue,
      variableValues: parsed.variables ?? {},
    });
    // A request that never executed (bad syntax, bad variables) is a 400; resolver errors are 200.
    reply(result.data === undefined ? 400 : 200, result);
  });
  return {
    url: `${server.origin}/graphql`,
    apiKey,
    catalog,
    faults,
    requests,
    pods,
    addPod: (podId) => {
      const podKey = `rp_pod_${podId}_key`;
      pods.set(podId, { desiredStatus: "RUNNING" });
      podKeys.set(podKey, podId);
      return { podKey };
    },
    failNextWith: (message, code = "BAD_USER_INPUT") => graphqlErrors.push({ message, code }),
    close: server.close,
  };
}
