import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { AgentHub } from "../app/agent-hub.ts";
import { hashSecret } from "../app/api-keys.ts";
import { writeBatchArtifacts } from "../app/batch-results.ts";
import type { AppContext } from "../app/context.ts";
import { validateBatch } from "../app/predictions.ts";
import { LaunchBackoff } from "../domain/backoff.ts";
import { readyUnits } from "../domain/batch.ts";
import { newId } from "../domain/ids.ts";
import { type Instance, type InstanceState, LIVE_STATES } from "../domain/instance.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL, strays } from "../domain/reconcile.ts";
import { MODEL_SPECS } from "../models/registry.ts";

/** How long an instance may take from launch to its agent registering. */
const BOOT_TIMEOUT_MS = 120_000;
/** How long a stopped agent gets to release its job and exit before the drain moves on. */
const AGENT_EXIT_GRACE_MS = 15_000;
/** How long one server may hold a batch's ligand check before another may take it over. */
const VALIDATION_LEASE_MS = 10 * 60_000;

/**
 * The periodic loops. Each tick of each loop runs on exactly one server process in the cluster,
 * through the store's cadence gate, so several replicas on one PostgreSQL never double up.
 */
export class Scheduler {
  readonly #ctx: AppContext;
  readonly #hub: AgentHub;
  readonly #agentUrl: () => string;
  readonly #startedAt: number;
  readonly #launchBackoff = new LaunchBackoff();
  #stopped = false;
  #reconciledAt = Number.NEGATIVE_INFINITY;
  #validating: Promise<void> | null = null;
  #loop: Promise<void> | undefined;

  constructor(ctx: AppContext, hub: AgentHub, agentUrl: () => string) {
    this.#ctx = ctx;
    this.#hub = hub;
    this.#agentUrl = agentUrl;
    this.#startedAt = ctx.now();
    ctx.provider.onExit?.((providerInstanceId, reason) => {
      // After stop() the store may be closed; drain() already recorded the terminations it caused.
      if (this.#stopped) return;
      void this.#markGone(providerInstanceId, reason).catch((error: unknown) =>
        ctx.log.error({ err: error }, "recording an instance exit failed"),
      );
    });
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
    // After a restart, agents get one lease period to reconnect before their leases count as lapsed.
    if (now - this.#startedAt >= config.leaseS * 1000 && (await store.tryRunLoop("reap", interval, now))) {
      await this.reap(now);
    }
    if (await store.tryRunLoop("instances", interval, now)) await this.superviseInstances(now);
    if (!this.#ctx.draining && (await store.tryRunLoop("provision", interval, now)))
      await this.provision(now);
    if (await store.tryRunLoop("batch_artifacts", interval, now)) await this.refreshBatchArtifacts(now);
    const reconcileMs = config.reconcileIntervalS * 1000;
    // A provider that lists per host is reconciled by every server for its host; others once per cluster.
    const reconcileDue = this.#ctx.provider.capabilities.listsPerHost
      ? now - this.#reconciledAt >= reconcileMs
      : await store.tryRunLoop("reconcile", reconcileMs, now);
    if (reconcileDue) {
      this.#reconciledAt = now;
      await this.reconcile(now);
    }
    if (!this.#validating && (await store.tryRunLoop("batch_validation", interval, now))) {
      await this.startBatchValidation(now);
    }
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

  /** Launches instances while runnable jobs outnumber the instances that could take them. */
  async provision(now: number): Promise<void> {
    const { store, provider } = this.#ctx;
    const ready = readyUnits(
      await store.readyWork(now),
      (model) => MODEL_SPECS.get(model)?.packing.perProcess ?? 1,
    );
    if (ready === 0) return;
    const live = await store.listInstances({ provider: provider.name, states: LIVE_STATES });
    for (const instance of live) {
      if (instance.readyAt !== null) this.#launchBackoff.agentRegistered(instance.readyAt);
    }
    if (!this.#launchBackoff.mayLaunch(now)) return;
    const free = live.filter((i) => i.state !== "busy").length;
    const toLaunch = Math.min(ready - free, provider.maxInstances - live.length);
    const gpusInUse = new Set(live.flatMap((i) => i.gpus.map((g) => g.index)));
    for (let i = 0; i < toLaunch; i++) {
      const gpus = provider.capabilities.gpus ? provider.allocateGpus(1, gpusInUse) : [];
      for (const gpu of gpus) gpusInUse.add(gpu.index);
      await this.launch(gpus);
    }
  }

  async launch(gpus: Instance["gpus"]): Promise<Instance> {
    const { store, provider, log } = this.#ctx;
    const bootstrapToken = randomBytes(24).toString("base64url");
    const instance = await store.insertInstance({
      id: newId("inst"),
      orgId: this.#ctx.defaultOrgId,
      provider: provider.name,
      gpus,
      bootstrapTokenHash: hashSecret(bootstrapToken),
      createdAt: this.#ctx.now(),
    });
    try {
      const launched = await provider.launch({
        instanceId: instance.id,
        gpus,
        labels: { [DEPLOYMENT_LABEL]: this.#ctx.config.deploymentId, [INSTANCE_LABEL]: instance.id },
        agentEnv: {
          HANGAR_URL: this.#agentUrl(),
          HANGAR_INSTANCE_ID: instance.id,
          HANGAR_BOOTSTRAP_TOKEN: bootstrapToken,
          HANGAR_AGENT_RECONNECT_S: String(this.#ctx.config.agentReconnectS),
          HANGAR_AGENT_MAX_LIFETIME_S: String(this.#ctx.config.instanceMaxLifetimeS),
        },
      });
      const { providerInstanceId } = launched;
      await store.recordLaunch(instance.id, launched);
      log.info(
        { instance_id: instance.id, provider: provider.name, provider_instance_id: providerInstanceId },
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
  async reconcile(now: number): Promise<void> {
    const { store, provider, config, log, terminations } = this.#ctx;
    const listed = await provider.list({ [DEPLOYMENT_LABEL]: config.deploymentId });
    const ids = listed.flatMap((l) => (l.labels[INSTANCE_LABEL] ? [l.labels[INSTANCE_LABEL]] : []));
    const known = new Map((await store.listInstances({ ids })).map((i) => [i.id, i.state]));
    const found = strays(listed, config.deploymentId, (id) => known.get(id));
    for (const stray of found) {
      if (!terminations.shouldRequest(stray.providerInstanceId, now)) continue;
      log.warn(
        { provider: provider.name, provider_instance_id: stray.providerInstanceId, why: stray.why },
        "terminating a stray instance",
      );
      try {
        await provider.terminate(stray.providerInstanceId);
        terminations.requested(stray.providerInstanceId);
      } catch (error) {
        terminations.failed(stray.providerInstanceId, (error as Error).message, now);
        log.error(
          { err: error, provider: provider.name, provider_instance_id: stray.providerInstanceId },
          "terminating a stray instance failed; retrying",
        );
      }
    }
    terminations.keepOnly(new Set(found.map((s) => s.providerInstanceId)));
  }

  /** Ends instances that never booted, went silent, idled too long, or vanished at the provider. */
  async superviseInstances(now: number): Promise<void> {
    const { store, provider, config } = this.#ctx;
    const live = await store.listInstances({ provider: provider.name, states: LIVE_STATES });
    for (const instance of live) {
      // After a restart of this scheduler, agents get the same grace as their leases to check in again.
      const silentFor = now - Math.max(instance.lastSeenAt ?? instance.createdAt, this.#startedAt);
      let reason: string | null = null;
      if (instance.state === "provisioning" && now - instance.createdAt > BOOT_TIMEOUT_MS) {
        reason = "agent did not register in time";
      } else if (instance.state !== "provisioning" && silentFor > 3 * config.leaseS * 1000) {
        reason = `agent silent for ${Math.round(silentFor / 1000)} s`;
      } else if (
        (instance.state === "idle" || instance.state === "ready") &&
        now - instance.stateChangedAt > config.idleTimeoutS * 1000
      ) {
        reason = `idle for more than ${config.idleTimeoutS} s`;
      } else if (
        instance.providerInstanceId &&
        (await provider.describe(instance.providerInstanceId)) === "gone"
      ) {
        reason = "instance is gone at the provider";
      }
      // Only from the state observed: an idle instance that just took a job is no longer idle.
      if (reason && (await this.terminate(instance, reason, [instance.state]))) {
        if (instance.state === "provisioning") this.#bootFailed(instance, reason, now);
      }
    }
  }

  /** Ends an instance if it is still in one of `from`; returns whether this call ended it. */
  async terminate(
    instance: Instance,
    reason: string,
    from: readonly InstanceState[] = LIVE_STATES,
  ): Promise<boolean> {
    const { store, provider, log } = this.#ctx;
    if (!(await store.transitionInstance(instance.id, from, "terminated", this.#ctx.now(), reason)))
      return false;
    log.info({ instance_id: instance.id, reason }, "instance terminated");
    if (instance.providerInstanceId) await provider.terminate(instance.providerInstanceId);
    return true;
  }

  /**
   * Graceful shutdown: let running work on this host's instances finish for up to `graceMs`, then stop
   * their agents, which release their jobs (no attempt spent) before exiting. Jobs an agent could not
   * release are released here, so the next server hands them out at once instead of after a lease.
   */
  async drain(graceMs: number): Promise<void> {
    const { store, provider, log } = this.#ctx;
    const deadline = this.#ctx.now() + graceMs;
    const live = () => store.listInstances({ provider: provider.name, states: LIVE_STATES });
    const isRunningHere = async (instance: Instance) =>
      instance.providerInstanceId !== null &&
      (await provider.describe(instance.providerInstanceId)) === "running";
    while ((await live()).some((i) => i.state === "busy") && this.#ctx.now() < deadline) await sleep(200);
    // Only this host's instances: other replicas' agents keep working for them.
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

  #bootFailed(instance: Instance, reason: string, now: number): void {
    const resumeAt = this.#launchBackoff.bootFailed(now);
    this.#ctx.log.error(
      {
        instance_id: instance.id,
        reason,
        failures_in_a_row: this.#launchBackoff.failuresInARow,
        launches_resume_at: new Date(resumeAt).toISOString(),
      },
      "instance ended before its agent registered; pausing launches (see the instance's agent.log)",
    );
  }

  async #markGone(providerInstanceId: string, reason: string): Promise<void> {
    const { store, provider } = this.#ctx;
    const live = await store.listInstances({ provider: provider.name, states: LIVE_STATES });
    const instance = live.find((i) => i.providerInstanceId === providerInstanceId);
    const now = this.#ctx.now();
    if (instance && (await store.transitionInstance(instance.id, LIVE_STATES, "terminated", now, reason))) {
      this.#ctx.log.warn({ instance_id: instance.id, reason }, "instance ended");
      if (instance.state === "provisioning") this.#bootFailed(instance, reason, now);
    }
    // What the agent started (notebook runner, kernel) may outlive it; the provider ends those too.
    await provider.terminate(providerInstanceId);
  }
}
