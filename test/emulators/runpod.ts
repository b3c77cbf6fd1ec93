import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSchema, graphql } from "graphql";
import type { RunPodGpuType } from "../../src/providers/runpod/runpod-client.ts";
import { InstanceHost } from "../../src/providers/sim/instance-host.ts";
import { type EmulatedRequest, FaultQueue, type Reply, startEmulatorServer } from "./http.ts";

/**
 * RunPod's GraphQL API as ../shared/reference/providers.md describes it: bearer key or `?api_key=`,
 * catalog queries (`gpuTypes`) answered without a key, client errors as HTTP 200 with an `errors`
 * array, invalid variables as HTTP 400, bad keys as 401. Catalog, account and pods: a deployed pod is
 * RUNNING with a null `runtime` until its container starts (after a boot delay), then its
 * `dockerArgs` really run here with the pod's env plus RUNPOD_POD_ID and a pod-scoped RUNPOD_API_KEY.
 */
/** Fields the on-demand and the spot deploy inputs share. */
const DEPLOY_FIELDS = `
    name: String
    imageName: String
    cloudType: String
    gpuTypeId: String
    gpuCount: Int
    volumeInGb: Int
    containerDiskInGb: Int
    minVcpuCount: Int
    minMemoryInGb: Int
    dockerArgs: String
    ports: String
    volumeMountPath: String
    env: [EnvironmentVariableInput]
    dataCenterId: String
    countryCode: String
`;

const SCHEMA = buildSchema(`
  type Query {
    gpuTypes(input: GpuTypeFilter): [GpuType!]!
    myself: User
    pod(input: PodFilter!): Pod
  }
  type Mutation {
    podTerminate(input: PodTerminateInput!): Boolean
    podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput!): Pod
    podRentInterruptable(input: PodRentInterruptableInput!): Pod
    podStop(input: PodStopInput!): Pod
    podResume(input: PodResumeInput!): Pod
  }
  input PodTerminateInput { podId: String! }
  input PodFilter { podId: String! }
  input PodStopInput { podId: String! }
  input PodResumeInput { podId: String!, gpuCount: Int }
  input EnvironmentVariableInput { key: String!, value: String! }
  input PodFindAndDeployOnDemandInput {
${DEPLOY_FIELDS}
    templateId: String
    networkVolumeId: String
    supportPublicIp: Boolean
  }
  input PodRentInterruptableInput {
${DEPLOY_FIELDS}
    bidPerGpu: Float
  }
  type Pod {
    id: String!
    name: String
    desiredStatus: String
    costPerHr: Float
    gpuCount: Int
    imageName: String
    dockerArgs: String
    env: [String]
    machineId: String
    podType: String
    lastStatusChange: String
    runtime: PodRuntime
    machine: PodMachine
  }
  type PodRuntime { uptimeInSeconds: Int }
  type PodMachine { podHostId: String, gpuDisplayName: String }
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
    pods: [Pod!]!
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

/** A pod as the emulator keeps it. */
export interface EmulatedPod {
  id: string;
  name: string;
  desiredStatus: "RUNNING" | "EXITED" | "TERMINATED";
  costPerHr: number;
  gpuCount: number;
  gpuTypeId: string;
  imageName: string;
  dockerArgs: string;
  env: Record<string, string>;
  machineId: string;
  podType: "RESERVED" | "INTERRUPTABLE";
  /** Null until the container is up, as RunPod answers. */
  runtime: { uptimeInSeconds: number } | null;
  /** The container could not start: REST v2 says ERROR, GraphQL still RUNNING with no runtime. */
  failed: boolean;
  lastStatusChange: string;
}

export interface RunPodEmulator {
  /** GraphQL. */
  url: string;
  /** REST v2, on the same host as RunPod serves it (`…/v2`). */
  restUrl: string;
  apiKey: string;
  catalog: EmulatedGpuType[];
  faults: FaultQueue;
  /** Queries received, in order. */
  requests: string[];
  /** Every pod ever created (terminated ones too), by id. */
  pods: Map<string, EmulatedPod>;
  /** Where each pod's container runs its command (`dockerArgs`), as a local process. */
  host: InstanceHost;
  /** A running pod and the pod-scoped key RunPod would set in it (`RUNPOD_API_KEY` inside the pod). */
  addPod(podId: string): { podKey: string };
  /** The next GraphQL answer carries this error (HTTP 200), as RunPod reports no capacity and outages. */
  failNextWith(message: string, code?: string): void;
  /** The next deploy finds no machine for its specification. */
  refuseNextLaunch(): void;
  /** The next pod never starts its container: it stays RUNNING with a null runtime (stuck provisioning). */
  stickNextBoot(): void;
  /** The next pod's container fails to start: REST v2 shows it ERROR. */
  failNextBoot(): void;
  /** RunPod takes a spot pod back: its container stops and the pod shows EXITED. */
  preempt(podId: string): Promise<void>;
  close(): Promise<void>;
}

const NO_CAPACITY =
  "There are no longer any instances available with the requested specifications. Please refresh and try again.";

export async function startRunPodEmulator(
  apiKey = "rp_test_key",
  options: { bootDelayMs?: number } = {},
): Promise<RunPodEmulator> {
  const bootDelayMs = options.bootDelayMs ?? 200;
  const catalog = structuredClone(RUNPOD_CATALOG);
  const faults = new FaultQueue();
  const requests: string[] = [];
  const graphqlErrors: { message: string; code: string }[] = [];
  const pods = new Map<string, EmulatedPod>();
  /** Pod-scoped keys: each may act on its own pod only. */
  const podKeys = new Map<string, string>();
  const disks = await mkdtemp(join(tmpdir(), "runpod-emulator-"));
  const host = new InstanceHost(disks);
  let caller: string | null = null;
  let refuseNext = false;
  let stickNext = false;
  let failNext = false;
  let graphqlUrl = "";
  let podCount = 0;

  const podKeyOf = (podId: string) => {
    const podKey = `rp_pod_${podId}_key`;
    podKeys.set(podKey, podId);
    return podKey;
  };
  /** The container starts after the boot delay, with what RunPod sets inside every pod. */
  const bootLater = (pod: EmulatedPod, stuck: boolean) => {
    setTimeout(() => {
      if (stuck || pod.failed || pod.desiredStatus !== "RUNNING" || host.isRunning(pod.id)) return;
      pod.runtime = { uptimeInSeconds: 0 };
      host.boot(pod.id, pod.dockerArgs, {
        ...pod.env,
        RUNPOD_POD_ID: pod.id,
        RUNPOD_API_KEY: podKeyOf(pod.id),
        RUNPOD_GRAPHQL_URL: graphqlUrl,
        RUNPOD_GPU_COUNT: String(pod.gpuCount),
      });
    }, bootDelayMs).unref();
  };
  const view = (pod: EmulatedPod) => ({
    ...pod,
    env: Object.entries(pod.env).map(([key, value]) => `${key}=${value}`),
    machine: { podHostId: `${pod.id}-host`, gpuDisplayName: pod.gpuTypeId },
  });
  const ownPod = (podId: string) => {
    const pod = pods.get(podId);
    if (!pod || pod.desiredStatus === "TERMINATED") throw new Error("pod not found");
    if (caller !== apiKey && podKeys.get(caller ?? "") !== podId) throw new Error("Unauthorized");
    return pod;
  };
  const deploy = (input: DeployInput, spot: boolean) => {
    const type = catalog.find((t) => t.id === input.gpuTypeId);
    if (!type) throw new Error(`GPU type ${input.gpuTypeId ?? "(none)"} does not exist`);
    const gpuCount = input.gpuCount ?? 1;
    if (refuseNext || type.stockStatus === "None" || gpuCount > type.maxGpuCount) {
      refuseNext = false;
      throw new Error(
        spot ? NO_CAPACITY.replace("Please refresh and try again.", "Please try again later.") : NO_CAPACITY,
      );
    }
    const secure = input.cloudType === "SECURE";
    const perGpu = spot
      ? (input.bidPerGpu ?? 0)
      : ((secure ? type.securePrice : (type.communityPrice ?? type.securePrice)) ?? 0);
    const minimumBid =
      (secure ? type.secureSpotPrice : (type.communitySpotPrice ?? type.secureSpotPrice)) ?? 0;
    if (spot && perGpu < minimumBid)
      throw new Error(`Your bid is below the minimum bid of $${minimumBid}/hr.`);
    const id = `pod${(++podCount).toString(36).padStart(6, "0")}${Math.random().toString(36).slice(2, 8)}`;
    const pod: EmulatedPod = {
      id,
      name: input.name ?? id,
      desiredStatus: "RUNNING",
      // What RunPod bills: the host's price, here a cent above the catalog's lowest for on-demand.
      costPerHr: Math.round((perGpu + (spot ? 0 : 0.01)) * gpuCount * 1000) / 1000,
      gpuCount,
      gpuTypeId: type.id,
      imageName: input.imageName ?? "",
      dockerArgs: input.dockerArgs ?? "",
      env: Object.fromEntries((input.env ?? []).map((e) => [e.key, e.value])),
      machineId: `m-${type.displayName.replaceAll(" ", "").toLowerCase()}-${podCount % 3}`,
      podType: spot ? "INTERRUPTABLE" : "RESERVED",
      runtime: null,
      failed: failNext,
      lastStatusChange: `Rented by User: ${new Date().toUTCString()}`,
    };
    pods.set(id, pod);
    bootLater(pod, stickNext);
    stickNext = false;
    failNext = false;
    return view(pod);
  };

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
    podTerminate: async ({ input }: { input: { podId: string } }) => {
      const pod = pods.get(input.podId);
      if (!pod || pod.desiredStatus === "TERMINATED") throw new Error("pod not found to terminate");
      if (caller !== apiKey && podKeys.get(caller ?? "") !== input.podId) throw new Error("Unauthorized");
      pod.desiredStatus = "TERMINATED";
      pod.runtime = null;
      await host.halt(pod.id);
      return null;
    },
    pod: ({ input }: { input: { podId: string } }) => {
      const pod = pods.get(input.podId);
      return pod && pod.desiredStatus !== "TERMINATED" ? view(pod) : null;
    },
    podFindAndDeployOnDemand: ({ input }: { input: DeployInput }) => deploy(input, false),
    podRentInterruptable: ({ input }: { input: DeployInput }) => deploy(input, true),
    podStop: async ({ input }: { input: { podId: string } }) => {
      const pod = ownPod(input.podId);
      pod.desiredStatus = "EXITED";
      pod.runtime = null;
      await host.halt(pod.id);
      return view(pod);
    },
    podResume: ({ input }: { input: { podId: string } }) => {
      const pod = ownPod(input.podId);
      if (pod.desiredStatus === "RUNNING") return view(pod);
      pod.desiredStatus = "RUNNING";
      bootLater(pod, false);
      return view(pod);
    },
    myself: () => ({
      id: "user_emulated",
      email: "lab@example.org",
      clientBalance: 435.85,
      // What running pods cost together, as RunPod's account page sums it.
      currentSpendPerHr:
        Math.round(
          [...pods.values()]
            .filter((p) => p.desiredStatus === "RUNNING")
            .reduce((sum, p) => sum + p.costPerHr, 0) * 1000,
        ) / 1000,
      spendLimit: 180,
      pods: [...pods.values()].filter((p) => p.desiredStatus !== "TERMINATED").map(view),
    }),
  };

  /** REST v2's view of a pod (the schema's fields Hangar and the docs' examples use). */
  const restView = (pod: EmulatedPod) => {
    const status =
      pod.desiredStatus === "TERMINATED"
        ? "TERMINATED"
        : pod.desiredStatus === "EXITED"
          ? "EXITED"
          : pod.failed
            ? "ERROR"
            : pod.runtime
              ? "RUNNING"
              : "STARTING";
    return {
      id: pod.id,
      name: pod.name,
      image: pod.imageName,
      args: pod.dockerArgs,
      env: pod.env,
      status,
      actions:
        status === "EXITED"
          ? ["start", "terminate"]
          : status === "TERMINATED"
            ? []
            : ["stop", "restart", "terminate"],
      gpu: { id: pod.gpuTypeId, count: pod.gpuCount },
      cloud: "SECURE",
      cost: status === "EXITED" || status === "TERMINATED" ? 0 : pod.costPerHr,
      locked: false,
      runtime: status === "RUNNING" ? { uptime: pod.runtime?.uptimeInSeconds ?? 0 } : null,
      createdAt: new Date().toISOString(),
      startedAt: null,
    };
  };
  /** RFC 9457 problem details, as REST v2 reports every error. */
  const problem = (reply: Reply, status: number, title: string, detail: string) =>
    reply(status, { title, status, detail }, "application/problem+json");
  const rest = async (request: EmulatedRequest, reply: Reply) => {
    const path = request.url.pathname.replace(/^\/v2/, "");
    const podKeyFor = podKeys.get(request.key ?? "");
    if (request.key !== apiKey && !podKeyFor) return problem(reply, 401, "Unauthorized", "invalid API key");
    if (request.method === "GET" && path === "/pods") {
      const visible = [...pods.values()].filter((p) => p.desiredStatus !== "TERMINATED");
      return reply(200, { pods: visible.filter((p) => !podKeyFor || p.id === podKeyFor).map(restView) });
    }
    const match = /^\/pods\/([^/]+)(\/action)?$/.exec(path);
    const pod = match ? pods.get(decodeURIComponent(match[1]!)) : undefined;
    if (!match) return problem(reply, 404, "Not Found", `no route ${request.method} ${request.url.pathname}`);
    if (!pod || pod.desiredStatus === "TERMINATED") return problem(reply, 404, "Not Found", "pod not found");
    if (podKeyFor && podKeyFor !== pod.id)
      return problem(reply, 403, "Forbidden", "this key cannot act on that pod");
    if (request.method === "GET" && !match[2]) return reply(200, restView(pod));
    const action =
      request.method === "DELETE" && !match[2]
        ? "terminate"
        : (JSON.parse(request.body || "{}") as { action?: string }).action;
    if (request.method !== "DELETE" && !(request.method === "POST" && match[2])) {
      return problem(reply, 405, "Method Not Allowed", `${request.method} is not allowed here`);
    }
    if (!restView(pod).actions.includes(action ?? "")) {
      return problem(
        reply,
        409,
        "Conflict",
        `action ${action} is not valid for a pod that is ${restView(pod).status}`,
      );
    }
    if (action === "terminate") {
      pod.desiredStatus = "TERMINATED";
      pod.runtime = null;
      await host.halt(pod.id);
      return reply(204, null);
    }
    if (action === "stop") {
      pod.desiredStatus = "EXITED";
      pod.runtime = null;
      await host.halt(pod.id);
    } else {
      pod.desiredStatus = "RUNNING";
      pod.failed = false;
      bootLater(pod, false);
    }
    return reply(200, restView(pod));
  };

  const server = await startEmulatorServer(faults, async (request, reply) => {
    if (request.url.pathname.startsWith("/v2/")) {
      requests.push(`${request.method} ${request.url.pathname}`);
      return rest(request, reply);
    }
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
  graphqlUrl = `${server.origin}/graphql`;
  return {
    url: graphqlUrl,
    restUrl: `${server.origin}/v2`,
    apiKey,
    catalog,
    faults,
    requests,
    pods,
    host,
    addPod: (podId) => {
      pods.set(podId, {
        id: podId,
        name: podId,
        desiredStatus: "RUNNING",
        costPerHr: 0.34,
        gpuCount: 1,
        gpuTypeId: "NVIDIA GeForce RTX 4090",
        imageName: "",
        dockerArgs: "",
        env: {},
        machineId: "m-added",
        podType: "RESERVED",
        runtime: { uptimeInSeconds: 1 },
        failed: false,
        lastStatusChange: "",
      });
      return { podKey: podKeyOf(podId) };
    },
    failNextWith: (message, code = "BAD_USER_INPUT") => graphqlErrors.push({ message, code }),
    refuseNextLaunch: () => {
      refuseNext = true;
    },
    stickNextBoot: () => {
      stickNext = true;
    },
    failNextBoot: () => {
      failNext = true;
    },
    preempt: async (podId) => {
      const pod = pods.get(podId);
      if (!pod) return;
      pod.desiredStatus = "EXITED";
      pod.runtime = null;
      pod.lastStatusChange = `Exited by RunPod: spot instance interrupted ${new Date().toUTCString()}`;
      await host.halt(podId);
    },
    close: async () => {
      await host.haltAll();
      await server.close();
      await rm(disks, { recursive: true, force: true });
    },
  };
}

type DeployInput = {
  name?: string;
  imageName?: string;
  cloudType?: string;
  gpuTypeId?: string;
  gpuCount?: number;
  dockerArgs?: string;
  env?: { key: string; value: string }[];
  bidPerGpu?: number;
};
