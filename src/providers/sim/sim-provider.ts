import type { GpuAssignment } from "../../domain/instance.ts";
import { matchesQuery, type Offer, type OfferQuery } from "../../domain/offers.ts";
import { hasLabels, type ListedInstance } from "../../domain/reconcile.ts";
import { ProviderApiError } from "../http.ts";
import type {
  ComputeProvider,
  LaunchResult,
  LaunchSpec,
  ProviderCapabilities,
  ProviderInstanceStatus,
} from "../provider.ts";
import type { InstanceHost } from "./instance-host.ts";
import {
  type ApiFault,
  type BootFate,
  drawApiFault,
  drawBootFate,
  drawNoCapacity,
  drawPreemptionAfterS,
  type SimFault,
  type SimMarket,
} from "./sim-market.ts";

interface SimInstance {
  id: string;
  labels: Record<string, string>;
  machineId: string;
  fate: BootFate;
  status: ProviderInstanceStatus;
  timers: NodeJS.Timeout[];
  /** When the market made it, and when it went (terminated, or the market closed); epoch ms. */
  createdAt: number;
  endedAt: number | null;
}

/** An instance the market made, gone or not, as a benchmark or test audits the market's side. */
export interface SimInstanceRecord {
  id: string;
  labels: Record<string, string>;
  status: ProviderInstanceStatus;
  createdAt: number;
  endedAt: number | null;
}

export interface SimProviderOptions {
  market: SimMarket;
  /** Where booted instances run their bootstrap command; absent: instances boot but run nothing. */
  host?: InstanceHost;
  random?: () => number;
  maxInstances?: number;
  /** Launch-to-register wait before an instance is given up (real milliseconds). */
  bootTimeoutMs?: number;
}

/**
 * A market that behaves like the GPU clouds, for benchmarks, chaos tests and a first try of the
 * cloud path without an account: its offers, boot times, boot failures, stuck launches, preemptions,
 * API faults and launches refused for want of capacity are drawn from `market` (sim-market.ts). A
 * booted instance runs the launch's real bootstrap command on this host, so the real agent
 * registers and runs the work. The market lives in this process: an instance it does not know
 * (after a restart) is `gone`, and the control plane ends it (its agent is told its instance is
 * terminated).
 */
export class SimProvider implements ComputeProvider {
  readonly name = "sim";
  readonly capabilities: ProviderCapabilities;
  readonly maxInstances: number;
  readonly #market: SimMarket;
  readonly #host: InstanceHost | undefined;
  readonly #random: () => number;
  readonly #instances = new Map<string, SimInstance>();
  /** Faults injected so far, per call (`launch`, `describe`, …; `running` for preemptions) and kind. */
  readonly #faults = new Map<string, Map<SimFault, number>>();
  #launched = 0;

  constructor(options: SimProviderOptions) {
    this.#market = options.market;
    this.#host = options.host;
    this.#random = options.random ?? Math.random;
    this.maxInstances = options.maxInstances ?? 16;
    this.capabilities = {
      gpus: true,
      listsPerHost: false,
      launchesOffers: true,
      stopResume: false,
      bootTimeoutMs: options.bootTimeoutMs ?? (10 * 60_000) / options.market.behaviour.timeScale,
      reportsSpend: false,
    };
  }

  async offers(query: OfferQuery): Promise<Offer[]> {
    this.#maybeFail("offers");
    const fetchedAt = Date.now();
    return this.#market.offers
      .map((spec) => ({
        provider: this.name,
        id: spec.id,
        gpu: spec.gpu,
        gpuCount: spec.gpuCount,
        gpuMemoryGb: spec.gpuMemoryGb,
        vcpus: 8 * spec.gpuCount,
        memoryGb: 32 * spec.gpuCount,
        region: spec.region,
        spot: spec.spot,
        pricePerHour: spec.pricePerHour,
        reliability: 1 - this.#market.behaviour.bootFailureRate - this.#market.behaviour.stuckRate,
        fetchedAt,
      }))
      .filter((offer) => matchesQuery(offer, query));
  }

  allocateGpus(): GpuAssignment[] {
    return [];
  }

  /**
   * A timeout here is the dangerous kind: the instance was made, only the answer was lost, so the
   * control plane does not know it — the reconciler must find it by its labels. A launch refused for
   * want of capacity makes nothing (a retryable 409: another offer, or this one later, may launch).
   */
  async launch(spec: LaunchSpec): Promise<LaunchResult> {
    const fault = this.#maybeFail("launch", ["server_error", "rate_limited"]);
    const offer = this.#market.offers.find((o) => o.id === spec.offer?.id);
    if (!offer)
      throw new ProviderApiError(this.name, 404, `no such offer: ${spec.offer?.id ?? "none"}`, false);
    if (fault === null && drawNoCapacity(this.#market.behaviour.noCapacityRate, this.#random)) {
      this.#count("launch", "no_capacity");
      throw new ProviderApiError(
        this.name,
        409,
        `launch: no capacity left on ${offer.id} (every machine behind it is taken)`,
        true,
      );
    }
    const id = `sim-${(++this.#launched).toString().padStart(6, "0")}`;
    const instance: SimInstance = {
      id,
      labels: { ...spec.labels },
      machineId: `${offer.id}-host${Math.floor(this.#random() * offer.hosts)}`,
      fate: drawBootFate(this.#market.behaviour, this.#random),
      status: "booting",
      timers: [],
      createdAt: Date.now(),
      endedAt: null,
    };
    this.#instances.set(id, instance);
    this.#schedule(instance, offer.spot, spec);
    if (fault === "timeout") {
      throw new ProviderApiError(this.name, 0, "launch timed out (the instance may have been created)", true);
    }
    return {
      providerInstanceId: id,
      machineId: instance.machineId,
      pricePerHour: Math.round(offer.pricePerHour * (1 + this.#market.behaviour.billedOverQuote) * 1e4) / 1e4,
    };
  }

  async describe(providerInstanceId: string): Promise<ProviderInstanceStatus> {
    this.#maybeFail("describe");
    return this.#instances.get(providerInstanceId)?.status ?? "gone";
  }

  async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    this.#maybeFail("list");
    return [...this.#instances.values()]
      .filter((instance) => instance.status !== "gone" && hasLabels(instance.labels, labels))
      .map((instance) => ({ providerInstanceId: instance.id, labels: instance.labels }));
  }

  async terminate(providerInstanceId: string): Promise<void> {
    this.#maybeFail("terminate");
    const instance = this.#instances.get(providerInstanceId);
    if (!instance || instance.status === "gone") return;
    for (const timer of instance.timers) clearTimeout(timer);
    instance.status = "gone";
    instance.endedAt = Date.now();
    await this.#host?.halt(providerInstanceId);
  }

  /** Instances not gone, for benchmarks that count what is still running. */
  liveInstances(): { id: string; labels: Record<string, string>; status: ProviderInstanceStatus }[] {
    return [...this.#instances.values()]
      .filter((instance) => instance.status !== "gone")
      .map(({ id, labels, status }) => ({ id, labels, status }));
  }

  /** Every instance the market made, gone ones included, with when it was made and went. */
  instances(): SimInstanceRecord[] {
    return [...this.#instances.values()].map(({ id, labels, status, createdAt, endedAt }) => ({
      id,
      labels,
      status,
      createdAt,
      endedAt,
    }));
  }

  /** The faults injected so far, per call (`running` holds the preemptions) and kind. */
  injectedFaults(): Record<string, Partial<Record<SimFault, number>>> {
    return Object.fromEntries(
      [...this.#faults.entries()].map(([call, kinds]) => [call, Object.fromEntries(kinds.entries())]),
    );
  }

  /** The market lives in this process: it ends with it, and so do its instances. */
  async close(): Promise<void> {
    for (const instance of this.#instances.values()) {
      for (const timer of instance.timers) clearTimeout(timer);
      if (instance.status !== "gone") instance.endedAt = Date.now();
      instance.status = "gone";
    }
    await this.#host?.haltAll();
  }

  /** Boot (or failure) after the drawn time, then, for spot, a preemption at the drawn moment. */
  #schedule(instance: SimInstance, spot: boolean, spec: LaunchSpec): void {
    const { fate } = instance;
    if (fate.outcome === "stuck") return;
    const realMs = (seconds: number) => (seconds * 1000) / this.#market.behaviour.timeScale;
    const booted = setTimeout(() => {
      if (instance.status !== "booting") return;
      if (fate.outcome === "failed") {
        instance.status = "failed";
        return;
      }
      instance.status = "running";
      this.#host?.boot(instance.id, spec.bootstrapCommand, spec.agentEnv);
      if (!spot) return;
      const afterS = drawPreemptionAfterS(this.#market.behaviour.preemptionsPerHour, this.#random);
      if (!Number.isFinite(afterS)) return;
      const preempted = setTimeout(() => {
        if (instance.status !== "running") return;
        instance.status = "preempted";
        this.#count("running", "preemption");
        void this.#host?.halt(instance.id);
      }, realMs(afterS));
      preempted.unref();
      instance.timers.push(preempted);
    }, realMs(fate.afterS));
    booted.unref();
    instance.timers.push(booted);
  }

  /** Fails the call per the market's fault rate; a launch may be told which faults fail before acting. */
  #maybeFail(call: string, failFirst: readonly ApiFault[] = ["server_error", "rate_limited", "timeout"]) {
    const fault = drawApiFault(this.#market.behaviour.apiFaultRate, this.#random);
    if (fault === null) return null;
    this.#count(call, fault);
    if (!failFirst.includes(fault)) return fault;
    const status = fault === "server_error" ? 503 : fault === "rate_limited" ? 429 : 0;
    throw new ProviderApiError(this.name, status, `${call}: injected ${fault.replace("_", " ")}`, true);
  }

  #count(call: string, fault: SimFault): void {
    const kinds = this.#faults.get(call) ?? new Map<SimFault, number>();
    kinds.set(fault, (kinds.get(fault) ?? 0) + 1);
    this.#faults.set(call, kinds);
  }
}
