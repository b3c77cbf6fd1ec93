import type { GpuAssignment } from "../domain/instance.ts";
import type { LaunchedInstance } from "../domain/machines.ts";
import type { Offer, OfferQuery } from "../domain/offers.ts";
import type { ListedInstance } from "../domain/reconcile.ts";

export interface ProviderCapabilities {
  /** Offers GPUs (false: CPU only, and instances launch without any). */
  readonly gpus: boolean;
  /** `list` sees only this host's instances (local processes): every server reconciles its own host. */
  readonly listsPerHost: boolean;
  /** Launches a chosen offer on a remote machine (a cloud); false for this host's own processes. */
  readonly launchesOffers: boolean;
  /** `stop` and `resume` keep an instance's disk while its GPU is released. */
  readonly stopResume: boolean;
  /**
   * How long an instance may take from launch to its agent registering before it is terminated and
   * the next offer tried (RunPod pods can sit provisioning for many minutes).
   */
  readonly bootTimeoutMs: number;
  /**
   * `spendPerHour` answers what the account is billed per hour now, as the provider itself reports
   * it, so the prices recorded at launch can be checked against the bill.
   */
  readonly reportsSpend: boolean;
}

export interface LaunchSpec {
  instanceId: string;
  /** Environment the agent needs: control-plane URL, instance id, one-time bootstrap token. */
  agentEnv: Record<string, string>;
  gpus: GpuAssignment[];
  /** Set on the instance at the provider (domain/reconcile.ts): which deployment and instance it is. */
  labels: Record<string, string>;
  /** The offer to launch (providers with `launchesOffers`); null for this host's processes. */
  offer: Offer | null;
  /** The container or VM image a remote instance boots. */
  image: string;
  /** The shell command a remote instance runs at boot: fetch the agent from the control plane, start it. */
  bootstrapCommand: string;
  diskGb: number;
}

/** Machine history is kept per host, and a run's price is what the provider reports here. */
export type LaunchResult = LaunchedInstance;

/**
 * An instance as its provider sees it: `booting` (created, not up yet), `running`, `stopped` (by
 * request), `preempted` (a spot instance taken back, or stopped by the provider), `failed` (it will
 * never boot), `gone` (terminated or unknown to the provider), `unknown` (not this provider's to say).
 */
export type ProviderInstanceStatus =
  | "booting"
  | "running"
  | "stopped"
  | "preempted"
  | "failed"
  | "gone"
  | "unknown";

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
  /** Releases the machine but keeps the disk (providers with `stopResume`). */
  stop?(providerInstanceId: string): Promise<void>;
  resume?(providerInstanceId: string): Promise<void>;
  /** The account's current spend per hour as the provider reports it (providers with `reportsSpend`). */
  spendPerHour?(): Promise<number>;
  /** The server is stopping: a provider whose market lives in this process (sim) ends its instances. */
  close?(): Promise<void>;
  /** Called when an instance ends for any reason; local processes report their own exits. */
  onExit?(listener: (providerInstanceId: string, reason: string) => void): void;
}
