import type { GpuAssignment } from "../../domain/instance.ts";
import { canonicalGpu, type Offer, type OfferQuery } from "../../domain/offers.ts";
import { hasLabels, type ListedInstance } from "../../domain/reconcile.ts";
import { ProviderApiError } from "../http.ts";
import type {
  ComputeProvider,
  LaunchResult,
  LaunchSpec,
  ProviderCapabilities,
  ProviderInstanceStatus,
} from "../provider.ts";
import type { VastClient, VastInstance, VastOffer, VastSearch } from "./vast-client.ts";

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

/**
 * Vast.ai: offers are the marketplace's rentable, unrented machines (asks), on-demand or bid (spot);
 * an instance is a container on the ask's machine. It runs `spec.image` in Vast's `args` launch mode,
 * which keeps the image as it is (the ssh and jupyter modes replace its entrypoint with Vast's own
 * and need an image their injected setup works in), with `sh -c <bootstrap command>` as its
 * entrypoint: any image with a shell runs the bootstrap command, and the container ends with it.
 */
export class VastProvider implements ComputeProvider {
  readonly name = "vastai";
  readonly capabilities: ProviderCapabilities = {
    gpus: true,
    listsPerHost: false,
    launchesOffers: true,
    stopResume: true,
    // An image pull on a marketplace host with a slow link takes minutes.
    bootTimeoutMs: 10 * 60_000,
    reportsSpend: true,
  };
  readonly maxInstances: number;
  readonly #client: VastClient;
  /** Instances this provider stopped: stopped by request, not outbid (Vast shows both alike). */
  readonly #stopped = new Set<string>();

  constructor(client: VastClient, options: { maxInstances?: number } = {}) {
    this.#client = client;
    this.maxInstances = options.maxInstances ?? 16;
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

  allocateGpus(): GpuAssignment[] {
    return [];
  }

  /** Rents the offer's ask: on demand, or a bid at the offer's price for a spot offer. */
  async launch(spec: LaunchSpec): Promise<LaunchResult> {
    if (spec.offer?.provider !== this.name) throw new Error("vastai: a launch needs a Vast.ai offer");
    const contract = String(
      await this.#client.createInstance(spec.offer.id, {
        client_id: "me",
        image: spec.image,
        disk: spec.diskGb,
        label: encodeLabels(spec.labels),
        env: spec.agentEnv,
        onstart: "sh",
        runtype: "args",
        args: ["-c", spec.bootstrapCommand],
        price: spec.offer.spot ? spec.offer.pricePerHour : null,
      }),
    );
    // The price billed is the instance's own `dph_total` (its disk included), not the offer's quote.
    // An instance that cannot be read back is destroyed: a launch returns a known instance or nothing.
    const instance = await this.#client.showInstance(contract).catch(async (error: unknown) => {
      await this.#client.destroyInstance(contract);
      throw error;
    });
    if (instance === null) {
      await this.#client.destroyInstance(contract);
      throw new ProviderApiError(
        "vastai",
        404,
        `instance ${contract} was not found right after it was created`,
        true,
      );
    }
    return {
      providerInstanceId: contract,
      machineId: String(instance.machine_id),
      pricePerHour: instance.dph_total,
    };
  }

  async describe(providerInstanceId: string): Promise<ProviderInstanceStatus> {
    const instance = await this.#client.showInstance(providerInstanceId);
    return instance === null ? "gone" : statusOf(instance, this.#stopped.has(providerInstanceId));
  }

  /** Vast lists live instances only: a destroyed one is no longer in the list. */
  async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    const instances = await this.#client.listInstances();
    return instances
      .map((instance) => ({ providerInstanceId: String(instance.id), labels: decodeLabels(instance.label) }))
      .filter((instance) => hasLabels(instance.labels, labels));
  }

  /**
   * Vast reports no account total; what it bills now is the sum of the account's running instances'
   * own `dph_total` (stopped ones bill only storage, left out here).
   */
  async spendPerHour(): Promise<number> {
    const instances = await this.#client.listInstances();
    const running = instances.filter((instance) => instance.actual_status === "running");
    return running.reduce((sum, instance) => sum + instance.dph_total, 0);
  }

  async terminate(providerInstanceId: string): Promise<void> {
    await this.#client.destroyInstance(providerInstanceId);
    this.#stopped.delete(providerInstanceId);
  }

  async stop(providerInstanceId: string): Promise<void> {
    // Noted first: a stop whose answer was lost may still have been made.
    this.#stopped.add(providerInstanceId);
    await this.#client.setState(providerInstanceId, "stopped");
  }

  async resume(providerInstanceId: string): Promise<void> {
    await this.#client.setState(providerInstanceId, "running");
    this.#stopped.delete(providerInstanceId);
  }
}

/** What Docker answers when the container cannot be created from the image (a bad image, a host fault). */
const BOOT_FAILED = /OCI runtime create failed/i;

/**
 * Hangar's status of a Vast instance. `actual_status` is the container's; the contract's states say
 * why a container that is not running is down:
 * - `intended_status` stopped: all three stopped is the documented outbid state, and also what a
 *   stop by request looks like. Stopped when this provider asked for it, or the instance is on
 *   demand (only bids are outbid); else preempted. A bid this server stopped before a restart then
 *   reads as preempted: down either way.
 * - wanted running but `cur_state` and `next_state` stopped: Vast holds it down with no start
 *   planned, against its owner's wish: preempted.
 * - otherwise wanted running: a container on its way up (a start Vast has accepted, maybe queued
 *   for its GPU), or one whose command has ended, which the agent's silence then reveals.
 * `frozen`, `unknown` and anything new (a host gone offline) are not for Hangar to read.
 */
function statusOf(instance: VastInstance, stoppedByRequest: boolean): ProviderInstanceStatus {
  const { actual_status: actual, cur_state: current, next_state: next } = instance;
  if (actual === "running") return "running";
  if (actual === "created" && BOOT_FAILED.test(instance.status_msg ?? "")) return "failed";
  if (instance.intended_status === "stopped") {
    return stoppedByRequest || instance.is_bid === false ? "stopped" : "preempted";
  }
  if (current === "stopped" && next === "stopped") return "preempted";
  if (actual === null || ["loading", "created", "exited", "stopped"].includes(actual)) return "booting";
  return "unknown";
}

/**
 * Vast has one free-text `label` per instance: Hangar's labels go in it as `key=value` pairs joined
 * by `;`, each part URI-encoded so a `;` or `=` in a value cannot split it. How long a label may be
 * is not confirmed (60 characters are known to work; Hangar's two labels take about that).
 */
function encodeLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`)
    .join(";");
}

/** Hangar's labels in an instance's `label`; none in a label someone else wrote. */
function decodeLabels(label: string | null): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of (label ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    try {
      labels[decodeURIComponent(part.slice(0, eq))] = decodeURIComponent(part.slice(eq + 1));
    } catch {
      // Not an encoding of Hangar's: not a label.
    }
  }
  return labels;
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
    // Launches skip a machine whose history is bad: Vast names the host behind each ask.
    machineId: String(offer.machine_id),
  };
}
