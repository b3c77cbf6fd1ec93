import { generateKeyPairSync } from "node:crypto";
import type { GpuAssignment } from "../../domain/instance.ts";
import { canonicalGpu, machinePrice, type Offer, type OfferQuery } from "../../domain/offers.ts";
import { hasLabels, type ListedInstance } from "../../domain/reconcile.ts";
import type {
  ComputeProvider,
  LaunchResult,
  LaunchSpec,
  ProviderCapabilities,
  ProviderInstanceStatus,
} from "../provider.ts";
import {
  bootScript,
  type TensorDockClient,
  type TensorDockGpu,
  type TensorDockLocation,
} from "./tensordock-client.ts";

export interface TensorDockProviderOptions {
  /** Upper bound of live VMs (16 when absent). */
  maxInstances?: number;
  /**
   * The SSH public key installed on every VM. TensorDock requires one; without it each provider
   * makes a throwaway key whose private half is never kept, so nobody can log in.
   */
  sshPublicKey?: string;
}

/** TensorDock's minimum disk. */
const MIN_STORAGE_GB = 100;
/**
 * TensorDock bills vCPUs and RAM on top of the GPUs, and a location reports its maximum, not a
 * size per GPU: each GPU gets this much, capped at the location's maximum.
 */
const VCPUS_PER_GPU = 8;
const RAM_GB_PER_GPU = 32;

/**
 * TensorDock: every location's GPUs as on-demand offers (no spot), launched as Ubuntu VMs whose
 * first boot runs Hangar's bootstrap command through cloud-init.
 */
export class TensorDockProvider implements ComputeProvider {
  readonly name = "tensordock";
  readonly capabilities: ProviderCapabilities = {
    gpus: true,
    listsPerHost: false,
    launchesOffers: true,
    stopResume: true,
    // A VM boots an OS, then cloud-init installs and starts the agent.
    bootTimeoutMs: 10 * 60_000,
    // TensorDock's v2 API has no documented spend or billing endpoint.
    reportsSpend: false,
  };
  readonly maxInstances: number;
  readonly #client: TensorDockClient;
  readonly #sshPublicKey: string;

  constructor(client: TensorDockClient, options: TensorDockProviderOptions = {}) {
    this.#client = client;
    this.maxInstances = options.maxInstances ?? 16;
    this.#sshPublicKey = options.sshPublicKey ?? throwawaySshPublicKey();
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

  /** A VM's GPUs are its own: nothing to share out on this host. */
  allocateGpus(_count: number, _inUse: ReadonlySet<number>): GpuAssignment[] {
    return [];
  }

  /**
   * Creates a VM for the offer (its location and GPU model) and reads it back for the rate
   * TensorDock bills, which includes vCPUs, RAM and disk the quote leaves out.
   */
  async launch(spec: LaunchSpec): Promise<LaunchResult> {
    const { offer } = spec;
    if (offer?.provider !== this.name) {
      throw new Error(`TensorDock launches its own offers only, not ${offer?.provider ?? "none"}`);
    }
    const { locationId, v0Name } = parseOfferId(offer.id);
    const gpuCount = Math.max(1, offer.gpuCount);
    const providerInstanceId = await this.#client.createInstance({
      name: nameWithLabels(spec.labels),
      locationId,
      gpu: { v0Name, count: gpuCount },
      vcpus: Math.min(VCPUS_PER_GPU * gpuCount, offer.vcpus ?? Number.POSITIVE_INFINITY),
      ramGb: Math.min(RAM_GB_PER_GPU * gpuCount, offer.memoryGb ?? Number.POSITIVE_INFINITY),
      storageGb: Math.max(MIN_STORAGE_GB, spec.diskGb),
      sshPublicKey: this.#sshPublicKey,
      // The agent's kill switch powers the VM off: the only way a VM can end itself.
      bootScript: bootScript(spec.bootstrapCommand, { ...spec.agentEnv, HANGAR_AGENT_POWEROFF: "1" }),
    });
    try {
      const created = await this.#client.getInstance(providerInstanceId);
      if (created === null)
        throw new Error(`TensorDock lost VM ${providerInstanceId} right after creating it`);
      return {
        providerInstanceId,
        machineId: created.locationId ?? locationId,
        // Should TensorDock not report a rate, the quote is the best price known.
        pricePerHour: created.rateHourly ?? offer.pricePerHour,
      };
    } catch (error) {
      // Hangar records no VM it could not read back: delete it rather than leave it billing.
      await this.#client.deleteInstance(providerInstanceId).catch(() => undefined);
      throw error;
    }
  }

  async describe(providerInstanceId: string): Promise<ProviderInstanceStatus> {
    const instance = await this.#client.getInstance(providerInstanceId);
    return instance === null ? "gone" : statusOf(instance.status);
  }

  /** Hangar's VMs (their names carry the labels) that are not being deleted. */
  async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    const instances = await this.#client.listInstances();
    return instances.flatMap((instance) => {
      const own = labelsOfName(instance.name);
      if (own === null || statusOf(instance.status) === "gone") return [];
      return hasLabels(own, labels) ? [{ providerInstanceId: instance.id, labels: own }] : [];
    });
  }

  async terminate(providerInstanceId: string): Promise<void> {
    await this.#client.deleteInstance(providerInstanceId);
  }

  async stop(providerInstanceId: string): Promise<void> {
    await this.#client.stopInstance(providerInstanceId);
  }

  /** Starts the VM again; cloud-init does not rerun the boot script, so no agent starts by itself. */
  async resume(providerInstanceId: string): Promise<void> {
    await this.#client.startInstance(providerInstanceId);
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

/** An offer id back into its location and GPU model: `<location id>:<v0Name>` (v0Names have no `:`). */
export function parseOfferId(offerId: string): { locationId: string; v0Name: string } {
  const at = offerId.lastIndexOf(":");
  if (at <= 0 || at === offerId.length - 1) throw new Error(`Not a TensorDock offer id: ${offerId}`);
  return { locationId: offerId.slice(0, at), v0Name: offerId.slice(at + 1) };
}

/**
 * TensorDock VMs have no labels, so they travel in the name: `hangar key=value key=value`, sorted,
 * each key and value percent-encoded so that spaces and `=` inside them cannot break it apart.
 * Unconfirmed: that TensorDock keeps names verbatim (its own examples have spaces) and any limit on
 * their length.
 */
const NAME_PREFIX = "hangar";

export function nameWithLabels(labels: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`);
  return [NAME_PREFIX, ...pairs].join(" ");
}

/** The labels in a VM's name; null for a VM Hangar did not name. */
export function labelsOfName(name: string): Record<string, string> | null {
  const [prefix, ...pairs] = name.split(" ");
  if (prefix !== NAME_PREFIX) return null;
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) return null;
    try {
      labels[decodeURIComponent(pair.slice(0, eq))] = decodeURIComponent(pair.slice(eq + 1));
    } catch {
      return null;
    }
  }
  return labels;
}

/**
 * TensorDock's VM statuses (not confirmed; see TensorDockInstance) as Hangar's. A status not known
 * here counts as booting, so the boot timeout decides rather than a guess.
 */
function statusOf(status: string): ProviderInstanceStatus {
  switch (status.toLowerCase()) {
    // A stopping VM is not stopped yet: TensorDock (as emulated) refuses to start it until it is.
    case "running":
    case "stopping":
      return "running";
    case "stopped":
      return "stopped";
    case "deleting":
    case "deleted":
      return "gone";
    case "error":
    case "failed":
      return "failed";
    default:
      return "booting";
  }
}

/** An OpenSSH `ssh-ed25519` public key whose private half is dropped at once. */
function throwawaySshPublicKey(): string {
  const { publicKey } = generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url");
  // The SSH wire format: each field is its length (4 bytes, big-endian), then its bytes.
  const field = (bytes: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    return Buffer.concat([length, bytes]);
  };
  const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(raw)]);
  return `ssh-ed25519 ${blob.toString("base64")} hangar-no-login`;
}
