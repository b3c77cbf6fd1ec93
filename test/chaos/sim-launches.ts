import { setTimeout as sleep } from "node:timers/promises";
import { LIVE_STATES } from "../../src/domain/instance.ts";
import type { Offer } from "../../src/domain/offers.ts";
import { DEPLOYMENT_LABEL } from "../../src/domain/reconcile.ts";
import type { ComputeProvider } from "../../src/providers/provider.ts";
import type { SimOfferSpec, SimProvider } from "../../src/providers/sim/index.ts";
import type { RunningServer } from "../../src/server/server.ts";

/**
 * The launch path shared by the provisioning benchmark's leak scenario (bench/provisioning.ts) and
 * the provider-faults chaos test (provider-faults.test.ts): launches go straight through the control
 * plane's real launch (`scheduler.launch`: the instance row, the provider's call, the row's outcome)
 * on the simulated market, which outlives the control plane as a cloud does.
 */

/** A sim offer as a quote the launch names. */
export function simOffer(spec: SimOfferSpec): Offer {
  return {
    provider: "sim",
    id: spec.id,
    gpu: spec.gpu,
    gpuCount: spec.gpuCount,
    gpuMemoryGb: spec.gpuMemoryGb,
    vcpus: null,
    memoryGb: null,
    region: spec.region,
    spot: spec.spot,
    pricePerHour: spec.pricePerHour,
    reliability: null,
    fetchedAt: Date.now(),
  };
}

export interface LaunchesWithRestarts {
  /** The control plane running at the end (the last one started). */
  server: RunningServer;
  /** Launches the control plane saw succeed. */
  launched: number;
  /** Launches that failed (refused, timed out, or cut short by a restart). */
  refused: number;
}

/**
 * The market as a launch sees it when the control plane goes down mid-call: the call is made (the
 * instance too, unless it fails), and its answer arrives only once `until` has settled.
 */
function answeringAfter(sim: SimProvider, until: Promise<unknown>): ComputeProvider {
  return {
    name: sim.name,
    capabilities: sim.capabilities,
    maxInstances: sim.maxInstances,
    offers: (query) => sim.offers(query),
    allocateGpus: () => sim.allocateGpus(),
    async launch(spec) {
      const [answer] = await Promise.allSettled([sim.launch(spec)]);
      await until.catch(() => undefined);
      if (answer.status === "rejected") throw answer.reason;
      return answer.value;
    },
    describe: (id) => sim.describe(id),
    list: (labels) => sim.list(labels),
    terminate: (id) => sim.terminate(id),
  };
}

/**
 * `launches` launches, ten at a time, cycling through `offers`; the control plane is closed and
 * started again (`start`, on the same data) `restarts` times, evenly along the way. A restart comes
 * between two batches, or, where `restartInFlight` says so, in the middle of one: the control plane
 * closes while the batch's calls are at the market, whose answers reach it only after its store
 * closed — the instances are made, their records never written, as a crash there would leave them.
 */
export async function launchWithRestarts(options: {
  server: RunningServer;
  start: () => Promise<RunningServer>;
  sim: SimProvider;
  offers: readonly SimOfferSpec[];
  launches: number;
  restarts: number;
  restartInFlight?: (restart: number) => boolean;
  onRestart?: (launchesSoFar: number) => void;
}): Promise<LaunchesWithRestarts> {
  const { sim, offers, launches } = options;
  let server = options.server;
  let launched = 0;
  let refused = 0;
  let restarts = 0;
  const perRestart = Math.ceil(launches / (options.restarts + 1));
  for (let i = 0; i < launches; i += 10) {
    const restartAfter = (i + 10) % perRestart < 10 && i + 10 < launches;
    const inFlight = restartAfter && (options.restartInFlight?.(restarts) ?? false);
    const closed = Promise.withResolvers<void>();
    const provider = inFlight ? answeringAfter(sim, closed.promise) : sim;
    const running = server;
    const batch = Array.from({ length: Math.min(10, launches - i) }, (_, k) =>
      running.scheduler
        .launch(provider, { gpus: [], offer: simOffer(offers[(i + k) % offers.length]!) })
        .then(
          () => launched++,
          () => refused++,
        ),
    );
    if (inFlight) {
      options.onRestart?.(i + 10);
      await Promise.all([...batch, server.close().finally(closed.resolve)]);
    } else {
      await Promise.all(batch);
      if (restartAfter) {
        options.onRestart?.(i + 10);
        await server.close();
      }
    }
    if (restartAfter) {
      restarts++;
      server = await options.start();
    }
  }
  return { server, launched, refused };
}

/**
 * Ends every instance the control plane holds live on the market, as an operator winding down would,
 * then waits up to `timeoutMs` for the market to run none of this deployment's instances (what the
 * control plane never knew of, or failed to end, is the reconciler's to find). Answers how many are
 * left, and when the wait began (a `performance.now()` reading).
 */
export async function endEverything(
  server: RunningServer,
  sim: SimProvider,
  options: { reason?: string; timeoutMs?: number } = {},
): Promise<{ leaked: number; waitStartedAt: number }> {
  const { reason = "benchmark over", timeoutMs = 120_000 } = options;
  for (const instance of await server.ctx.store.listInstances({ provider: "sim", states: LIVE_STATES })) {
    await server.scheduler.terminate(instance, reason);
  }
  const waitStartedAt = performance.now();
  const ours = () => ourInstances(sim, server.ctx.config.deploymentId);
  while (ours().length > 0 && performance.now() - waitStartedAt < timeoutMs) await sleep(250);
  return { leaked: ours().length, waitStartedAt };
}

/** This deployment's instances that the market still runs (anything not gone). */
export function ourInstances(sim: SimProvider, deployment: string) {
  return sim.liveInstances().filter((i) => i.labels[DEPLOYMENT_LABEL] === deployment);
}
