import type { GpuAssignment } from "../../domain/instance.ts";
import { canonicalGpu, machinePrice, type Offer, type OfferQuery } from "../../domain/offers.ts";
import { hasLabels, type ListedInstance, labelsAsEnv, labelsFromEnv } from "../../domain/reconcile.ts";
import type {
  ComputeProvider,
  LaunchResult,
  LaunchSpec,
  ProviderCapabilities,
  ProviderInstanceStatus,
} from "../provider.ts";
import { shellQuote } from "../shell.ts";
import type { RunPodClient, RunPodGpuType } from "./runpod-client.ts";
import type { RunPodRestClient, RunPodRestPod } from "./runpod-rest-client.ts";

/**
 * RunPod: offers from the catalog, and pods. Each GPU type yields up to four offers: community and
 * secure cloud, on-demand and spot (spot is best effort: RunPod dropped it from its docs in May 2026
 * but the schema still quotes it). A type whose stock is `None` for the count asked is not offered
 * at all, so a stale quote cannot send a launch into "no capacity". Pods have no labels: Hangar's
 * travel in the pod's environment, which RunPod lists back. GraphQL quotes, deploys (on demand and
 * spot) and reports the account's spend; REST v2 describes, lists, stops, resumes and terminates.
 */
export class RunPodProvider implements ComputeProvider {
  readonly name = "runpod";
  readonly capabilities: ProviderCapabilities = {
    gpus: true,
    listsPerHost: false,
    launchesOffers: true,
    stopResume: true,
    // Pods are known to sit provisioning for many minutes before RunPod gives up on a host.
    bootTimeoutMs: 20 * 60_000,
    reportsSpend: true,
  };
  readonly maxInstances: number;
  readonly #client: RunPodClient;
  readonly #rest: RunPodRestClient;

  constructor(
    clients: { graphql: RunPodClient; rest: RunPodRestClient },
    options: { maxInstances?: number } = {},
  ) {
    this.#client = clients.graphql;
    this.#rest = clients.rest;
    this.maxInstances = options.maxInstances ?? 16;
  }

  async offers(query: OfferQuery): Promise<Offer[]> {
    const gpuCount = Math.max(1, query.minGpus ?? 1);
    const types = await this.#client.gpuTypes(gpuCount);
    const fetchedAt = Date.now();
    return types.flatMap((type) => offersOf(type, gpuCount, fetchedAt));
  }

  allocateGpus(): GpuAssignment[] {
    return [];
  }

  async launch(spec: LaunchSpec): Promise<LaunchResult> {
    if (!spec.offer) throw new Error("runpod: a launch needs an offer");
    const { gpuTypeId, cloudType, spot } = parseOfferId(spec.offer.id);
    const env = { ...spec.agentEnv, ...labelsAsEnv(spec.labels) };
    const deployed = await this.#client.deployPod({
      name: `hangar-${spec.instanceId}`,
      imageName: spec.image,
      cloudType,
      gpuTypeId,
      gpuCount: spec.offer.gpuCount,
      containerDiskInGb: spec.diskGb,
      volumeInGb: 0,
      // RunPod hands `dockerArgs` to the container as its command line.
      dockerArgs: `sh -c ${shellQuote(spec.bootstrapCommand)}`,
      env: Object.entries(env).map(([key, value]) => ({ key, value })),
      ...(spot ? { bidPerGpu: spec.offer.pricePerHour / Math.max(1, spec.offer.gpuCount) } : {}),
    });
    // The price billed is the created pod's `costPerHr`, which can differ from the catalog's quote.
    const pod = await this.#client.pod(deployed.id);
    return {
      providerInstanceId: deployed.id,
      machineId: deployed.machineId ?? pod?.machineId ?? deployed.id,
      pricePerHour: pod?.costPerHr ?? spec.offer.pricePerHour,
    };
  }

  async describe(providerInstanceId: string): Promise<ProviderInstanceStatus> {
    const pod = await this.#rest.pod(providerInstanceId);
    if (pod?.status !== "EXITED") return podStatus(pod);
    // REST v2 does not say whether a pod was interruptible; GraphQL's `podType` does.
    const described = await this.#client.pod(providerInstanceId);
    return described?.podType === "INTERRUPTABLE" ? "preempted" : "stopped";
  }

  async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    const pods = await this.#rest.pods();
    return pods
      .filter((pod) => pod.status !== "TERMINATED")
      .map((pod) => ({ providerInstanceId: pod.id, labels: labelsOf(pod.env ?? {}) }))
      .filter((pod) => hasLabels(pod.labels, labels));
  }

  /** RunPod's own figure for the account: `myself { currentSpendPerHr }`. */
  spendPerHour(): Promise<number> {
    return this.#client.currentSpendPerHour();
  }

  terminate(providerInstanceId: string): Promise<void> {
    return this.#rest.deletePod(providerInstanceId);
  }

  stop(providerInstanceId: string): Promise<void> {
    return this.#rest.podAction(providerInstanceId, "stop");
  }

  resume(providerInstanceId: string): Promise<void> {
    return this.#rest.podAction(providerInstanceId, "start");
  }
}

/**
 * REST v2's lifecycle: PROVISIONING and STARTING boot, RUNNING with a runtime runs, ERROR is a
 * container that cannot start (the next offer is tried at once). EXITED is decided by the caller: an
 * interruptible pod that RunPod exited was preempted, since Hangar stops pods only to resume them,
 * never spot ones.
 */
function podStatus(pod: RunPodRestPod | null): ProviderInstanceStatus {
  if (pod === null || pod.status === "TERMINATED") return "gone";
  if (pod.status === "ERROR") return "failed";
  if (pod.status === "RUNNING") return pod.runtime === null ? "booting" : "running";
  return "booting";
}

/** Hangar's labels, from the pod's environment (REST v2 gives it as an object). */
const labelsOf = (env: Record<string, string>) =>
  labelsFromEnv(Object.entries(env).map(([key, value]) => `${key}=${value}`));

/** Offer ids are `<gpuTypeId>:<COMMUNITY|SECURE>[:SPOT]`, as `offersOf` builds them. */
function parseOfferId(id: string): { gpuTypeId: string; cloudType: "COMMUNITY" | "SECURE"; spot: boolean } {
  const match = /^(.+):(COMMUNITY|SECURE)(:SPOT)?$/.exec(id);
  if (!match) throw new Error(`runpod: "${id}" is not a RunPod offer id`);
  return {
    gpuTypeId: match[1]!,
    cloudType: match[2] as "COMMUNITY" | "SECURE",
    spot: match[3] !== undefined,
  };
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
