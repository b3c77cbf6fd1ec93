import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { AgentHub } from "../app/agent-hub.ts";
import { hashSecret } from "../app/api-keys.ts";
import { writeBatchArtifacts } from "../app/batch-results.ts";
import { billingPass } from "../app/billing.ts";
import type { AppContext } from "../app/context.ts";
import { validateBatch } from "../app/predictions.ts";
import { LaunchBackoff } from "../domain/backoff.ts";
import { readyUnits } from "../domain/batch.ts";
import { newId } from "../domain/ids.ts";
import { type Instance, type InstanceState, LIVE_STATES } from "../domain/instance.ts";
import { machineHistory } from "../domain/machines.ts";
import { MARKET_HISTORY_DAYS, marketPoints, type Offer } from "../domain/offers.ts";
import {
  candidateOffers,
  capByPools,
  type GpuDemand,
  launchNeeds,
  offersToStart,
  type ProvisioningStrategy,
  settleRace,
  warmPoolNeeds,
} from "../domain/provisioning.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL, strays } from "../domain/reconcile.ts";
import { MODEL_SPECS } from "../models/registry.ts";
import type { ComputeProvider } from "../providers/provider.ts";
import { AGENT_BOOTSTRAP_COMMAND } from "./bootstrap.ts";

/** How often a server looks for cloud credentials stored through another replica. */
const CREDENTIALS_REFRESH_MS = 30_000;
/** How long RoundRobin passes over an offer whose instance failed to boot. */
const FAILED_OFFER_SKIP_MS = 15 * 60_000;
/** The launch history that decides which machines are skipped (domain/machines.ts). */
const MACHINE_HISTORY_MS = 30 * 24 * 3600_000;
/** How long a stopped agent gets to release its job and exit before the drain moves on. */
const AGENT_EXIT_GRACE_MS = 15_000;
/** How long one server may hold a batch's ligand check before another may take it over. */
const VALIDATION_LEASE_MS = 10 * 60_000;

/**
 * The periodic loops. Each tick of each loop runs on exactly one server process in the cluster,
 * through the store's cadence gate, so several replicas on one PostgreSQL never double up: not even
 * when a pass outlasts its interval (a provisioning pass launching instances), which would otherwise
 * let a second replica launch for the same need past the providers' caps.
 */
export class Scheduler {
  readonly #ctx: AppContext;
  readonly #hub: AgentHub;
  readonly #agentUrl: () => string;
  readonly #startedAt: number;
  /** Per provider: launches pause while its instances keep dying before their agents register. */
  readonly #launchBackoff = new Map<string, LaunchBackoff>();
  #stopped = false;
  readonly #reconciledAt = new Map<string, number>();
  #credentialsCheckedAt: number;
  /** Races under way: instances launched together for one need; the first to register wins. */
  readonly #races: RaceEntry[][] = [];
  /** The offer each cloud instance was launched from, and offers that failed to boot lately (RoundRobin skips them). */
  readonly #offerOf = new Map<string, string>();
  readonly #failedOffers = new Map<string, number>();
  /** When each cloud instance was last described, so its provider is asked only every describeIntervalS. */
  readonly #describedAt = new Map<string, number>();
  #validating: Promise<void> | null = null;
  #loop: Promise<void> | undefined;

  constructor(ctx: AppContext, hub: AgentHub, agentUrl: () => string) {
    this.#ctx = ctx;
    this.#hub = hub;
    this.#agentUrl = agentUrl;
    this.#startedAt = ctx.now();
    this.#credentialsCheckedAt = this.#startedAt;
    for (const provider of ctx.providers) {
      provider.onExit?.((providerInstanceId, reason) => {
        // After stop() the store may be closed; drain() already recorded the terminations it caused.
        if (this.#stopped) return;
        void this.#markGone(provider, providerInstanceId, reason).catch((error: unknown) =>
          ctx.log.error({ err: error }, "recording an instance exit failed"),
        );
      });
    }
  }

  start(): void {
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
    await this.#validating;
  }

  async #run(): Promise<void> {
    const interval = this.#ctx.config.schedulerIntervalMs;
    while (!this.#stopped) {
      try {
        await this.tick();
      } catch (error) {
        this.#ctx.log.error({ err: error }, "scheduler tick failed");
      }
      await sleep(interval);
    }
  }

  /** One pass of every loop whose turn it is in this cluster. */
  async tick(): Promise<void> {
    const { store, config } = this.#ctx;
    const interval = config.schedulerIntervalMs;
    const now = this.#ctx.now();
    // Every server uses its own providers: each picks up credentials another replica stored.
    if (now - this.#credentialsCheckedAt >= CREDENTIALS_REFRESH_MS) {
      this.#credentialsCheckedAt = now;
      if (await this.#ctx.credentials.refresh(this.#ctx))
        this.#ctx.log.info("cloud credentials changed; providers rebuilt");
    }
    // After a restart, agents get one lease period to reconnect before their leases count as lapsed.
    if (now - this.#startedAt >= config.leaseS * 1000) {
      await store.runLoop("reap", interval, now, () => this.reap(now));
    }
    await store.runLoop("instances", interval, now, () => this.superviseInstances(now));
    if (!this.#ctx.draining) await store.runLoop("provision", interval, now, () => this.provision(now));
    await store.runLoop("batch_artifacts", interval, now, () => this.refreshBatchArtifacts(now));
    const reconcileMs = config.reconcileIntervalS * 1000;
    for (const provider of this.#ctx.providers) {
      const reconcile = async () => {
        this.#reconciledAt.set(provider.name, now);
        await this.reconcile(provider, now).catch((error: unknown) =>
          this.#ctx.log.error({ err: error, provider: provider.name }, "reconciling a provider failed"),
        );
      };
      // A provider that lists per host is reconciled by every server for its host; others once per cluster.
      if (!provider.capabilities.listsPerHost) {
        await store.runLoop(`reconcile:${provider.name}`, reconcileMs, now, reconcile);
      } else if (now - (this.#reconciledAt.get(provider.name) ?? Number.NEGATIVE_INFINITY) >= reconcileMs) {
        await reconcile();
      }
    }
    const snapshotMs = config.marketSnapshotS * 1000;
    if (snapshotMs > 0) {
      await store.runLoop("market_snapshot", snapshotMs, now, () =>
        this.snapshotMarket(now).catch((error: unknown) =>
          this.#ctx.log.error({ err: error }, "taking a market snapshot failed"),
        ),
      );
    }
    if (!this.#validating) {
      await store.runLoop("batch_validation", interval, now, () => this.startBatchValidation(now));
    }
    await store.runLoop("billing", config.billingIntervalS * 1000, now, () =>
      billingPass(this.#ctx).catch((error: unknown) =>
        this.#ctx.log.error({ err: error }, "the billing pass failed"),
      ),
    );
  }

  /** Keeps the market view's prices now for its history, and drops snapshots past the history's reach. */
  async snapshotMarket(now: number): Promise<void> {
    const { rows } = await this.#ctx.offers.market();
    await this.#ctx.store.insertMarketPoints(
      this.#ctx.defaultOrgId,
      marketPoints(rows, now),
      now - MARKET_HISTORY_DAYS * 86_400_000,
    );
  }

  /**
   * Takes the check of one batch accepted as `validating` and runs it beside the loops (it takes
   * seconds for a big batch); its lease lets another server take over if this one dies.
   */
  async startBatchValidation(now: number): Promise<void> {
    const { store, log } = this.#ctx;
    const batch = await store.claimBatchValidation(now, VALIDATION_LEASE_MS);
    if (!batch) return;
    log.info({ batch_id: batch.id, ligands: batch.counters.total }, "checking a batch's ligands");
    this.#validating = validateBatch(this.#ctx, batch)
      .then((checked) => log.info({ batch_id: batch.id, status: checked?.status }, "batch checked"))
      .catch((error: unknown) => log.error({ err: error, batch_id: batch.id }, "checking a batch failed"))
      .finally(() => {
        this.#validating = null;
      });
  }

  /** Rewrites the artifacts of batches that finished, or ran on, since theirs were written. */
  async refreshBatchArtifacts(now: number): Promise<void> {
    const { store, config, log } = this.#ctx;
    // Rewriting reads every child: 100,000 children are rewritten about every 17 minutes.
    const refresh = { minMs: config.batchArtifactsRefreshS * 1000, perChildMs: 10 };
    const due = await store.batchesDueForArtifacts(now, refresh, 5);
    if (due.length === 0) return;
    const scratch = join(config.dataDir, "tmp");
    await mkdir(scratch, { recursive: true });
    for (const batch of due) {
      try {
        await writeBatchArtifacts(this.#ctx, batch, scratch);
      } catch (error) {
        log.error({ err: error, batch_id: batch.id }, "writing batch artifacts failed");
      }
    }
  }

  async reap(now: number): Promise<void> {
    const grace = this.#ctx.config.leaseS * 1000;
    for (const job of await this.#ctx.store.reapExpired(now, grace)) {
      this.#ctx.log.warn(
        { job_id: job.id, status: job.status, error: job.error },
        "attempt ended by the reaper",
      );
      await this.#hub.recordAttemptEnd(job, job.error, now);
    }
  }

  /**
   * Launches instances while runnable jobs outnumber the instances that could take them: this host
   * for jobs without GPUs and for batches, the cheapest cloud offer for jobs that ask for GPUs (this
   * host runs those too when no configured cloud can launch one).
   */
  async provision(now: number): Promise<void> {
    const { store } = this.#ctx;
    const work = await store.readyWork(now);
    const clouds = this.#clouds();
    const gpuJobsHere = clouds.length === 0 ? work.gpuJobs.reduce((sum, g) => sum + g.jobs, 0) : 0;
    const local = this.#local();
    const ready = readyUnits(work, (model) => MODEL_SPECS.get(model)?.packing.perProcess ?? 1) + gpuJobsHere;
    if (local && ready > 0) await this.#provisionLocal(local, ready, now);
    if (clouds.length > 0 && (work.gpuJobs.length > 0 || this.#ctx.config.warmPools.length > 0)) {
      await this.#provisionClouds(clouds, work.gpuJobs, now);
    }
  }

  async #provisionLocal(provider: ComputeProvider, ready: number, now: number): Promise<void> {
    const live = await this.#ctx.store.listInstances({ provider: provider.name, states: LIVE_STATES });
    if (!this.#mayLaunch(provider, live, now)) return;
    const free = live.filter((i) => i.state !== "busy").length;
    const toLaunch = Math.min(ready - free, provider.maxInstances - live.length);
    const gpusInUse = new Set(live.flatMap((i) => i.gpus.map((g) => g.index)));
    for (let i = 0; i < toLaunch; i++) {
      const gpus = provider.capabilities.gpus ? provider.allocateGpus(1, gpusInUse) : [];
      for (const gpu of gpus) gpusInUse.add(gpu.index);
      await this.launch(provider, { gpus, offer: null });
    }
  }

  /**
   * Per GPU shape waiting (and per warm pool short of its minimum), the cheapest matching offers
   * across every cloud, up to each cloud's cap, launched by the need's strategy (the runs' own, else
   * the deployment's): Coldstart the cheapest; RoundRobin
   * the cheapest whose offer has not failed to boot lately; Race several on different hosts at once.
   * An offer refused at launch (no capacity, a stale quote) is skipped for the next, up to three
   * rounds, so a stale quote costs one call, not a loop.
   */
  async #provisionClouds(clouds: ComputeProvider[], demand: GpuDemand[], now: number): Promise<void> {
    const { store, config, offers, log } = this.#ctx;
    const live = await store.listInstances({ states: LIVE_STATES });
    const cloudLive = live.filter((i) => clouds.some((c) => c.name === i.provider));
    const shapes = cloudLive.map((i) => ({
      gpuType: i.gpus[0]?.name ?? null,
      gpuCount: i.gpus.length,
      busy: i.state === "busy",
    }));
    const needs = capByPools(
      [...launchNeeds(demand, shapes), ...warmPoolNeeds(config.warmPools, shapes)],
      config.warmPools,
      shapes,
    );
    if (needs.length === 0) return;
    // Instances each cloud may still launch this pass: its cap less what it holds, none while paused.
    const room = new Map(
      clouds.map((c) => {
        const held = cloudLive.filter((i) => i.provider === c.name);
        return [c.name, this.#mayLaunch(c, held, now) ? c.maxInstances - held.length : 0];
      }),
    );
    if (![...room.values()].some((left) => left > 0)) return;
    const skipped = await this.#skippedMachines(now);
    for (const need of needs) {
      const strategy = need.strategy ?? config.provisioningStrategy;
      const search = await offers.search({ gpu: need.type, minGpus: need.count });
      const candidates = candidateOffers(search.offers, need, {
        launchable: (name) => (room.get(name) ?? 0) > 0,
        spot: config.preferSpot,
        skipped: (offer) =>
          (offer.machineId != null && skipped.has(`${offer.provider}/${offer.machineId}`)) ||
          (strategy === "roundrobin" && (this.#failedOffers.get(offerKey(offer)) ?? 0) > now),
      });
      let launched = 0;
      for (; launched < need.launches; launched++) {
        const started = await this.#launchOne(clouds, candidates, room, strategy);
        if (started.length === 0) break;
        if (started.length > 1) this.#races.push(started);
      }
      if (launched < need.launches) {
        log.warn(
          { gpu: need.type, count: need.count, launched, wanted: need.launches, failures: search.failures },
          "no offer left to launch",
        );
      }
    }
  }

  /**
   * One launch (a race's several) from `candidates`, within each cloud's `room`, over up to three
   * rounds: an offer refused at launch is dropped from `candidates` for this pass, one that
   * launched stays for the next launch. Answers what started; nothing when every round was refused.
   */
  async #launchOne(
    clouds: ComputeProvider[],
    candidates: Offer[],
    room: Map<string, number>,
    strategy: ProvisioningStrategy,
  ): Promise<RaceEntry[]> {
    const left = (provider: string) => room.get(provider) ?? 0;
    for (let round = 0; round < 3; round++) {
      const open = candidates.filter((offer) => left(offer.provider) > 0);
      if (open.length === 0) return [];
      // A race may not take a cloud past its cap either.
      const taking = new Map<string, number>();
      const starting = offersToStart(open, strategy, this.#ctx.config.raceWidth).filter((offer) => {
        taking.set(offer.provider, (taking.get(offer.provider) ?? 0) + 1);
        return taking.get(offer.provider)! <= left(offer.provider);
      });
      const started = await this.#launchAll(clouds, starting);
      for (const entry of started) room.set(entry.offer.provider, left(entry.offer.provider) - 1);
      for (const offer of starting) {
        if (!started.some((entry) => entry.offer === offer)) candidates.splice(candidates.indexOf(offer), 1);
      }
      if (started.length > 0) return started;
    }
    return [];
  }

  /** Launches the offers side by side; answers those that launched. A refused one is logged and skipped. */
  async #launchAll(clouds: ComputeProvider[], starting: Offer[]): Promise<RaceEntry[]> {
    const results = await Promise.allSettled(
      starting.map((offer) =>
        this.launch(clouds.find((c) => c.name === offer.provider)!, { gpus: gpusOf(offer), offer }),
      ),
    );
    const started: RaceEntry[] = [];
    results.forEach((result, i) => {
      const offer = starting[i]!;
      if (result.status === "fulfilled") {
        this.#offerOf.set(result.value.id, offerKey(offer));
        started.push({ instanceId: result.value.id, offer });
      } else {
        this.#ctx.log.warn(
          { err: result.reason, provider: offer.provider, offer: offer.id, gpu: offer.gpu },
          "launch refused; trying the next offer",
        );
      }
    });
    return started;
  }

  /**
   * Races whose first member's agent registered: the others still up are ended at once, and what
   * they cost until then is recorded as the race's waste.
   */
  async #settleRaces(now: number): Promise<void> {
    const { store, metrics, log } = this.#ctx;
    for (const race of [...this.#races]) {
      const instances = await store.listInstances({ ids: race.map((entry) => entry.instanceId) });
      const members = instances.map((instance) => ({
        instanceId: instance.id,
        registeredAt: instance.readyAt,
        busy: instance.state === "busy",
        ended: instance.state === "terminated",
        launchedAt: instance.createdAt,
        pricePerHour: instance.pricePerHour ?? 0,
      }));
      if (members.every((m) => m.ended)) {
        this.#races.splice(this.#races.indexOf(race), 1);
        continue;
      }
      const settled = settleRace(members, now);
      if (!settled) continue;
      this.#races.splice(this.#races.indexOf(race), 1);
      for (const loser of instances.filter((i) => settled.losers.includes(i.id))) {
        await this.terminate(loser, `lost the race to ${settled.winner}`);
      }
      metrics.raceWaste.inc(settled.wasteUsd);
      log.info(
        {
          winner: settled.winner,
          losers: settled.losers,
          waste_usd: Math.round(settled.wasteUsd * 1e4) / 1e4,
        },
        "race won; the other launches were ended",
      );
    }
  }

  /** Machines the launch history skips for now (domain/machines.ts), as `provider/machine`. */
  async #skippedMachines(now: number): Promise<Set<string>> {
    const { store, config, defaultOrgId } = this.#ctx;
    const attempts = await store.listLaunchAttempts(defaultOrgId, now - MACHINE_HISTORY_MS);
    return new Set(
      machineHistory(attempts, config.machinePolicy, now)
        .filter((machine) => machine.skippedUntil !== null && machine.skippedUntil > now)
        .map((machine) => `${machine.provider}/${machine.machineId}`),
    );
  }

  #backoffOf(provider: ComputeProvider): LaunchBackoff {
    let backoff = this.#launchBackoff.get(provider.name);
    if (!backoff) {
      backoff = new LaunchBackoff();
      this.#launchBackoff.set(provider.name, backoff);
    }
    return backoff;
  }

  #mayLaunch(provider: ComputeProvider, live: readonly Instance[], now: number): boolean {
    const backoff = this.#backoffOf(provider);
    for (const instance of live) {
      if (instance.readyAt !== null) backoff.agentRegistered(instance.readyAt);
    }
    return backoff.mayLaunch(now);
  }

  #local(): ComputeProvider | undefined {
    return this.#ctx.providers.find((p) => !p.capabilities.launchesOffers);
  }

  #clouds(): ComputeProvider[] {
    return this.#ctx.providers.filter((p) => p.capabilities.launchesOffers && p.capabilities.gpus);
  }

  #providerOf(instance: Instance): ComputeProvider | undefined {
    return this.#ctx.providers.find((p) => p.name === instance.provider);
  }

  async launch(
    provider: ComputeProvider,
    placement: { gpus: Instance["gpus"]; offer: Offer | null },
  ): Promise<Instance> {
    const { store, config, log } = this.#ctx;
    const bootstrapToken = randomBytes(24).toString("base64url");
    const instance = await store.insertInstance({
      id: newId("inst"),
      orgId: this.#ctx.defaultOrgId,
      provider: provider.name,
      gpus: placement.gpus,
      bootstrapTokenHash: hashSecret(bootstrapToken),
      createdAt: this.#ctx.now(),
    });
    try {
      const launched = await provider.launch({
        instanceId: instance.id,
        gpus: placement.gpus,
        offer: placement.offer,
        image: config.instanceImage,
        bootstrapCommand: AGENT_BOOTSTRAP_COMMAND,
        diskGb: config.instanceDiskGb,
        labels: { [DEPLOYMENT_LABEL]: config.deploymentId, [INSTANCE_LABEL]: instance.id },
        agentEnv: {
          HANGAR_URL: this.#agentUrl(),
          HANGAR_INSTANCE_ID: instance.id,
          HANGAR_BOOTSTRAP_TOKEN: bootstrapToken,
          HANGAR_AGENT_RECONNECT_S: String(config.agentReconnectS),
          HANGAR_AGENT_MAX_LIFETIME_S: String(config.instanceMaxLifetimeS),
        },
      });
      const { providerInstanceId } = launched;
      await store.recordLaunch(instance.id, launched);
      log.info(
        {
          instance_id: instance.id,
          provider: provider.name,
          provider_instance_id: providerInstanceId,
          offer: placement.offer?.id,
          price_per_hour: launched.pricePerHour,
        },
        "instance launched",
      );
    } catch (error) {
      await store.transitionInstance(
        instance.id,
        LIVE_STATES,
        "terminated",
        this.#ctx.now(),
        `launch failed: ${(error as Error).message}`,
      );
      throw error;
    }
    return instance;
  }

  /**
   * Never leak an instance: the provider's own list of this deployment's instances against the
   * database; whatever the database does not know, or has ended, is terminated until it is gone.
   */
  async reconcile(provider: ComputeProvider, now: number): Promise<void> {
    const { store, config, log, terminations } = this.#ctx;
    const listed = await provider.list({ [DEPLOYMENT_LABEL]: config.deploymentId });
    const ids = listed.flatMap((l) => (l.labels[INSTANCE_LABEL] ? [l.labels[INSTANCE_LABEL]] : []));
    const known = new Map((await store.listInstances({ ids })).map((i) => [i.id, i.state]));
    const found = strays(listed, config.deploymentId, (id) => known.get(id));
    // One tracker serves every provider: its entries are `provider/instance`.
    const key = (id: string) => `${provider.name}/${id}`;
    for (const stray of found) {
      if (!terminations.shouldRequest(key(stray.providerInstanceId), now)) continue;
      log.warn(
        { provider: provider.name, provider_instance_id: stray.providerInstanceId, why: stray.why },
        "terminating a stray instance",
      );
      try {
        await provider.terminate(stray.providerInstanceId);
        terminations.requested(key(stray.providerInstanceId));
      } catch (error) {
        terminations.failed(key(stray.providerInstanceId), (error as Error).message, now);
        log.error(
          { err: error, provider: provider.name, provider_instance_id: stray.providerInstanceId },
          "terminating a stray instance failed; retrying",
        );
      }
    }
    terminations.keepOnly(new Set(found.map((s) => key(s.providerInstanceId))), (id) =>
      id.startsWith(`${provider.name}/`),
    );
  }

  /**
   * Ends instances that never booted in their provider's time, went silent, idled too long, or that
   * their provider reports gone, failed or preempted. A preempted instance's jobs go back to the
   * queue without spending an attempt: the user's retry budget is not theirs to lose to the market.
   */
  async superviseInstances(now: number): Promise<void> {
    const { store, config } = this.#ctx;
    await this.#settleRaces(now);
    const live = await store.listInstances({ states: LIVE_STATES });
    // Instances that ended by any path (an exit, the reconciler) leave nothing behind here.
    const liveIds = new Set(live.map((i) => i.id));
    for (const map of [this.#offerOf, this.#describedAt]) {
      for (const id of map.keys()) if (!liveIds.has(id)) map.delete(id);
    }
    const liveOfType = (type: string | undefined) => live.filter((i) => i.gpus[0]?.name === type).length;
    // A warm pool keeps its minimum up through idleness; only instances beyond it idle out.
    const poolOf = (instance: Instance) =>
      config.warmPools.find((pool) => pool.type === instance.gpus[0]?.name);
    const keptWarm = (instance: Instance) =>
      config.warmPools.some(
        (pool) => pool.type === instance.gpus[0]?.name && liveOfType(pool.type) <= pool.min,
      );
    for (const instance of live) {
      const provider = this.#providerOf(instance);
      if (!provider) continue;
      // After a restart of this scheduler, agents get the same grace as their leases to check in again.
      const silentFor = now - Math.max(instance.lastSeenAt ?? instance.createdAt, this.#startedAt);
      let reason: string | null = null;
      let preempted = false;
      const bootTimeoutMs =
        (config.bootTimeoutS[provider.name] ?? 0) * 1000 || provider.capabilities.bootTimeoutMs;
      if (instance.state === "provisioning" && now - instance.createdAt > bootTimeoutMs) {
        reason = `agent did not register within ${Math.round(bootTimeoutMs / 1000)} s`;
      } else if (instance.state !== "provisioning" && silentFor > 3 * config.leaseS * 1000) {
        reason = `agent silent for ${Math.round(silentFor / 1000)} s`;
      } else if (
        (instance.state === "idle" || instance.state === "ready") &&
        now - instance.stateChangedAt > (poolOf(instance)?.idleS ?? config.idleTimeoutS) * 1000 &&
        !keptWarm(instance)
      ) {
        reason = `idle for more than ${poolOf(instance)?.idleS ?? config.idleTimeoutS} s`;
      } else if (instance.providerInstanceId && this.#describeDue(provider, instance, now)) {
        // A provider that cannot answer now is asked again next time; the other instances go on.
        const status = await provider.describe(instance.providerInstanceId).catch(() => "unknown" as const);
        if (status === "gone" || status === "failed") reason = `instance is ${status} at the provider`;
        else if (status === "preempted" || status === "stopped") {
          reason = `instance was ${status === "preempted" ? "preempted" : "stopped"} by its provider`;
          preempted = true;
        }
      }
      // Only from the state observed: an idle instance that just took a job is no longer idle.
      if (reason && (await this.terminate(instance, reason, [instance.state]))) {
        this.#describedAt.delete(instance.id);
        if (instance.state === "provisioning") {
          this.#bootFailed(provider, instance, reason, now);
          const offer = this.#offerOf.get(instance.id);
          if (offer) this.#failedOffers.set(offer, now + FAILED_OFFER_SKIP_MS);
        }
        this.#offerOf.delete(instance.id);
        if (preempted) await this.#requeuePreempted(instance);
      }
    }
  }

  /** Local processes are cheap to check every tick; a cloud's API is asked every describeIntervalS. */
  #describeDue(provider: ComputeProvider, instance: Instance, now: number): boolean {
    if (provider.capabilities.listsPerHost) return true;
    const last = this.#describedAt.get(instance.id) ?? Number.NEGATIVE_INFINITY;
    if (now - last < this.#ctx.config.describeIntervalS * 1000) return false;
    this.#describedAt.set(instance.id, now);
    return true;
  }

  async #requeuePreempted(instance: Instance): Promise<void> {
    const { store, log } = this.#ctx;
    for (const job of await store.releaseHeldBy(instance.id, this.#ctx.now())) {
      log.warn(
        { instance_id: instance.id, job_id: job.id },
        "job requeued after preemption (no attempt spent)",
      );
      await this.#hub.announceJobChange(job);
    }
  }

  /** Ends an instance if it is still in one of `from`; returns whether this call ended it. */
  async terminate(
    instance: Instance,
    reason: string,
    from: readonly InstanceState[] = LIVE_STATES,
  ): Promise<boolean> {
    const { store, log } = this.#ctx;
    if (!(await store.transitionInstance(instance.id, from, "terminated", this.#ctx.now(), reason)))
      return false;
    log.info({ instance_id: instance.id, reason }, "instance terminated");
    // A termination that fails here is retried by the reconciler: the instance is terminated in the
    // database, so the provider's listing of it makes it a stray.
    const provider = this.#providerOf(instance);
    if (instance.providerInstanceId && provider) {
      await provider
        .terminate(instance.providerInstanceId)
        .catch((error: unknown) =>
          log.error(
            { err: error, instance_id: instance.id },
            "terminating at the provider failed; the reconciler retries",
          ),
        );
    }
    return true;
  }

  /**
   * Graceful shutdown: let running work on this host's instances finish for up to `graceMs`, then stop
   * their agents, which release their jobs (no attempt spent) before exiting. Jobs an agent could not
   * release are released here, so the next server hands them out at once instead of after a lease.
   */
  async drain(graceMs: number): Promise<void> {
    const provider = this.#local();
    if (!provider) return;
    const { store, log } = this.#ctx;
    const deadline = this.#ctx.now() + graceMs;
    const live = () => store.listInstances({ provider: provider.name, states: LIVE_STATES });
    const isRunningHere = async (instance: Instance) =>
      instance.providerInstanceId !== null &&
      (await provider.describe(instance.providerInstanceId)) === "running";
    while ((await live()).some((i) => i.state === "busy") && this.#ctx.now() < deadline) await sleep(200);
    // Only this host's instances: other replicas' agents keep working for them, and cloud instances'
    // agents ride out the restart.
    const own: Instance[] = [];
    for (const instance of await live()) if (await isRunningHere(instance)) own.push(instance);
    for (const instance of own) await provider.terminate(instance.providerInstanceId!);
    const exitDeadline = this.#ctx.now() + AGENT_EXIT_GRACE_MS;
    while (this.#ctx.now() < exitDeadline) {
      const stillRunning = await Promise.all(own.map(isRunningHere));
      if (!stillRunning.includes(true)) break;
      await sleep(100);
    }
    for (const instance of own) {
      await store.transitionInstance(
        instance.id,
        LIVE_STATES,
        "terminated",
        this.#ctx.now(),
        "server shut down",
      );
      for (const job of await store.releaseHeldBy(instance.id, this.#ctx.now())) {
        log.warn({ instance_id: instance.id, job_id: job.id }, "released a job its agent left behind");
        await this.#hub.announceJobChange(job);
      }
    }
  }

  #bootFailed(provider: ComputeProvider, instance: Instance, reason: string, now: number): void {
    const backoff = this.#backoffOf(provider);
    const resumeAt = backoff.bootFailed(now);
    this.#ctx.log.error(
      {
        instance_id: instance.id,
        provider: provider.name,
        reason,
        failures_in_a_row: backoff.failuresInARow,
        launches_resume_at: new Date(resumeAt).toISOString(),
      },
      "instance ended before its agent registered; pausing launches on this provider (see its agent.log)",
    );
  }

  async #markGone(provider: ComputeProvider, providerInstanceId: string, reason: string): Promise<void> {
    const { store } = this.#ctx;
    const live = await store.listInstances({ provider: provider.name, states: LIVE_STATES });
    const instance = live.find((i) => i.providerInstanceId === providerInstanceId);
    const now = this.#ctx.now();
    if (instance && (await store.transitionInstance(instance.id, LIVE_STATES, "terminated", now, reason))) {
      this.#ctx.log.warn({ instance_id: instance.id, reason }, "instance ended");
      if (instance.state === "provisioning") this.#bootFailed(provider, instance, reason, now);
    }
    // What the agent started (notebook runner, kernel) may outlive it; the provider ends those too.
    await provider.terminate(providerInstanceId);
  }
}

/** One launched member of a race (or a lone launch): its instance and the offer it came from. */
interface RaceEntry {
  instanceId: string;
  offer: Offer;
}

const offerKey = (offer: Offer) => `${offer.provider}/${offer.id}`;

/** The GPUs an instance launched from `offer` has, as claims match them against jobs. */
function gpusOf(offer: Offer): Instance["gpus"] {
  return Array.from({ length: offer.gpuCount }, (_, index) => ({
    index,
    name: offer.gpu,
    memoryMiB: offer.gpuMemoryGb * 1024,
  }));
}
