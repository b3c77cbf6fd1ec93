import type { GpuAssignment } from "../domain/instance.ts";
import type { LaunchedInstance } from "../domain/machines.ts";
import type { Offer, OfferQuery } from "../domain/offers.ts";
import type { ListedInstance } from "../domain/reconcile.ts";

export interface ProviderCapabilities {
  /** Offers GPUs (false: CPU only, and instances launch without any). */
  readonly gpus: boolean;
  /** `list` sees only this host's instances (local processes): every server reconciles its own host. */
  readonly listsPerHost: boolean;
}

export interface LaunchSpec {
  instanceId: string;
  /** Environment the agent needs: control-plane URL, instance id, one-time bootstrap token. */
  agentEnv: Record<string, string>;
  gpus: GpuAssignment[];
  /** Set on the instance at the provider (domain/reconcile.ts): which deployment and instance it is. */
  labels: Record<string, string>;
}

/** Machine history is kept per host, and a run's price is what the provider reports here. */
export type LaunchResult = LaunchedInstance;

export type ProviderInstanceStatus = "running" | "gone" | "unknown";

/** Anything that quotes machines: every provider, including those Hangar cannot launch on yet. */
export interface OfferSource {
  readonly name: string;
  /** Live offers matching the query as far as the provider can filter; the caller filters again. */
  offers(query: OfferQuery): Promise<Offer[]>;
}

/** A source of compute instances. Each provider is one folder under src/providers with this contract. */
export interface ComputeProvider extends OfferSource {
  readonly capabilities: ProviderCapabilities;
  /** Upper bound of live instances this provider may hold at once. */
  readonly maxInstances: number;
  /** GPUs this provider can hand to one instance for a request, or [] when it runs on CPU. */
  allocateGpus(count: number, inUse: ReadonlySet<number>): GpuAssignment[];
  launch(spec: LaunchSpec): Promise<LaunchResult>;
  describe(providerInstanceId: string): Promise<ProviderInstanceStatus>;
  /** Live instances at the provider carrying every one of `labels`, whether Hangar knows them or not. */
  list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]>;
  /** Idempotent: an instance that is already gone counts as terminated. */
  terminate(providerInstanceId: string): Promise<void>;
  /** Called when an instance ends for any reason; local processes report their own exits. */
  onExit?(listener: (providerInstanceId: string, reason: string) => void): void;
}
