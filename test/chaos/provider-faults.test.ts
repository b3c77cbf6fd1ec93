import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { loadConfig } from "../../src/config.ts";
import { LIVE_STATES } from "../../src/domain/instance.ts";
import type { LedgerEntry } from "../../src/domain/ledger.ts";
import { costOfTime, formatMicro, toMicro, withMarkup } from "../../src/domain/money.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL, type ListedInstance } from "../../src/domain/reconcile.ts";
import {
  DEFAULT_SIM_MARKET,
  type SimFault,
  type SimMarket,
  SimProvider,
} from "../../src/providers/sim/index.ts";
import { type RunningServer, startServer } from "../../src/server/server.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";
import { endEverything, launchWithRestarts } from "./sim-launches.ts";

/**
 * Chaos: launches through the control plane's real launch path (the provisioning benchmark's leak
 * scenario, ./sim-launches.ts) on a simulated market that fails 20% of every provider call (5xx,
 * 429, timeouts; a timed-out create has still made its instance), refuses 5% of the launches it
 * answers for want of capacity, and takes spot instances back (preemption), while the control plane
 * is restarted along the way — every other time with a batch of launches in flight. The market runs
 * the instances' lives (boots, boot failures, stuck boots, preemptions) ×120 faster, so the control
 * plane's own supervision ends most of them under the same faults.
 *
 * At the end: the reconciler leaves no instance of this deployment running at the market, and the
 * ledger charges each instance the control plane recorded exactly its recorded instance-seconds ×
 * its price (with the deployment's markup, rounded as every charge is); an instance whose create
 * answer was lost — known to the control plane only as a failed or unanswered launch, found by its
 * labels at the market — is charged nothing: it has no price on record and ran no work, so its time
 * is the deployment's cost, not the org's.
 *
 * `CHAOS_LAUNCHES` sizes the run (CI: 200; full: 1000); `CHAOS_RESTARTS` (4) the restarts.
 */
const LAUNCHES = Number(process.env.CHAOS_LAUNCHES ?? 200);
const RESTARTS = Number(process.env.CHAOS_RESTARTS ?? 4);
const FAULT_RATE = 0.2;
const TIME_SCALE = 120;
const MARKUP_PERCENT = 12.5;
const API_KEY = "hgr_chaos_key_0123456789abcdef";

const MARKET: SimMarket = {
  offers: DEFAULT_SIM_MARKET.offers,
  behaviour: {
    ...DEFAULT_SIM_MARKET.behaviour,
    apiFaultRate: FAULT_RATE,
    noCapacityRate: FAULT_RATE / 4,
    // A spot machine is taken back after a simulated minute of running, on average.
    preemptionsPerHour: 60,
    timeScale: TIME_SCALE,
  },
};

/** The market, counting its list calls: one per reconciler pass. */
class CountingSim extends SimProvider {
  lists = 0;

  override async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    if (labels[DEPLOYMENT_LABEL] !== undefined) this.lists++;
    return super.list(labels);
  }
}

async function start(fixture: StoreFixture, dataDir: string, sim: SimProvider): Promise<RunningServer> {
  const config = loadConfig(
    {
      ...fixture.env,
      HANGAR_LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? "silent",
      HANGAR_DESCRIBE_INTERVAL_S: "1",
      HANGAR_RECONCILE_INTERVAL_S: "1",
      HANGAR_BILLING_INTERVAL_S: "1",
      HANGAR_SCHEDULER_INTERVAL_MS: "100",
      HANGAR_SHUTDOWN_GRACE_S: "1",
      HANGAR_PRICE_MARKUP_PERCENT: String(MARKUP_PERCENT),
    },
    { dataDir, port: 0, bootstrapApiKey: API_KEY },
  );
  return startServer(config, { extraProviders: [sim] });
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const sumOf = (values: Iterable<number>) => [...values].reduce((sum, v) => sum + v, 0);

for (const dialect of DIALECTS) {
  describe(`chaos: ${LAUNCHES} launches on a market failing ${FAULT_RATE * 100}% of calls, ${RESTARTS} control-plane restarts (${dialect.name})`, {
    timeout: 600_000,
  }, () => {
    let fixture: StoreFixture;
    let dataDir: string;
    let sim: CountingSim;
    let server: RunningServer | undefined;
    before(async () => {
      fixture = await dialect.fixture();
      dataDir = await mkdtemp(join(tmpdir(), "hangar-chaos-faults-"));
      // The market outlives the control plane, as a cloud does; its instances run nothing here.
      sim = new CountingSim({ market: MARKET, maxInstances: LAUNCHES });
    });
    after(async () => {
      await server?.close();
      await sim.close();
      await fixture.cleanup();
      await rm(dataDir, { recursive: true, force: true });
    });

    it("leaves no instance running once the reconciler has passed, and charges each recorded instance-second once", async (t) => {
      const started = performance.now();
      // The latest control plane is kept for after(), whatever happens along the way.
      const boot = async () => {
        server = await start(fixture, dataDir, sim);
        return server;
      };
      const storm = await launchWithRestarts({
        server: await boot(),
        start: boot,
        sim,
        // Every offer, the spot one included (one launch in six): its machines are preempted.
        offers: MARKET.offers,
        launches: LAUNCHES,
        restarts: RESTARTS,
        restartInFlight: (restart) => restart % 2 === 1,
      });
      server = storm.server;
      const { store, config } = storm.server.ctx;
      const deployment = config.deploymentId;
      const ours = () => sim.instances().filter((i) => i.labels[DEPLOYMENT_LABEL] === deployment);

      // The market plays the instances' lives out; the control plane ends them as they fail, are
      // preempted or never boot (boot timeout: 10 simulated minutes), under the same faults.
      const bootTimeoutMs = sim.capabilities.bootTimeoutMs;
      const settleStartedAt = performance.now();
      const settled = await waitUntil(
        "the control plane to end every instance on its own",
        async () => (await store.listInstances({ provider: "sim", states: LIVE_STATES })).length === 0,
        bootTimeoutMs + 20_000,
      ).then(
        () => Math.round((performance.now() - settleStartedAt) / 100) / 10,
        () => null,
      );
      const madeBeforeEnd = ours().length;

      // Whatever is left is ended now; what the control plane never knew of, or failed to end at the
      // market, is the reconciler's to find. The faults go on throughout.
      const listsBefore = sim.lists;
      const { leaked, waitStartedAt } = await endEverything(server, sim, { reason: "chaos over" });
      const reconcilerPasses = sim.lists - listsBefore;
      const endWaitS = Math.round((performance.now() - waitStartedAt) / 100) / 10;
      assert.equal(leaked, 0, "no instance of this deployment left running at the market");

      // Every instance the control plane recorded is ended and billed once.
      await waitUntil(
        "every ended instance to be billed",
        async () => (await store.ledger.instancesToBill(10_000)).length === 0,
        30_000,
      );
      const rows = await store.listInstances({ provider: "sim" });
      assert.deepEqual(
        rows.filter((r) => r.state !== "terminated").map((r) => r.id),
        [],
        "no instance live in the database",
      );
      const byId = new Map(rows.map((r) => [r.id, r]));

      // The market's side: every instance it made has its row (written before the provider's call),
      // and those whose rows never got the provider's answer are the lost creates.
      const made = ours();
      assert.equal(made.length, madeBeforeEnd, "nothing was made after the launches");
      const rowOf = (labels: Record<string, string>) => byId.get(labels[INSTANCE_LABEL] ?? "");
      assert.deepEqual(
        made.filter((i) => !rowOf(i.labels)).map((i) => i.id),
        [],
        "every instance at the market has its row",
      );
      const recorded = rows.filter((r) => r.providerInstanceId !== null);
      const lost = made.filter((i) => rowOf(i.labels)!.providerInstanceId === null);
      assert.equal(made.length, recorded.length + lost.length, "made = recorded + lost creates");
      assert.equal(recorded.length, storm.launched, "every launch the control plane saw succeed is recorded");
      for (const instance of recorded) {
        const atMarket = made.find((i) => i.id === instance.providerInstanceId);
        assert.ok(atMarket, `${instance.id}'s provider instance ${instance.providerInstanceId} exists`);
        assert.equal(atMarket.labels[INSTANCE_LABEL], instance.id);
        assert.notEqual(instance.pricePerHour, null, `${instance.id} has its price`);
      }
      for (const instance of lost) {
        // Only the reconciler ends an instance the control plane has no provider id for.
        assert.equal(instance.status, "gone", `lost create ${instance.id} was found and ended`);
        const row = rowOf(instance.labels)!;
        assert.equal(row.pricePerHour, null);
        assert.ok(row.terminationReason, `${row.id} says why it ended`);
      }

      // The ledger: one charge per recorded instance with a cost, keyed `idle:<instance>` (no run used
      // any of them), equal to its recorded instance-seconds × its price, to the micro-unit.
      const entries = await store.ledger.listEntries(server.ctx.defaultOrgId, 1_000_000);
      const charges = entries.filter((e) => e.kind === "charge");
      assert.deepEqual(
        entries.filter((e) => e.kind !== "charge").map((e) => e.key),
        [],
        "no holds, releases or grants: no work was submitted",
      );
      const chargeOf = new Map<string, LedgerEntry>();
      for (const charge of charges) {
        assert.ok(charge.key === `idle:${charge.subject}`, `${charge.key} is an instance's charge`);
        assert.ok(byId.has(charge.subject!), `${charge.key} is for a recorded instance`);
        assert.ok(!chargeOf.has(charge.subject!), `${charge.subject} charged once`);
        chargeOf.set(charge.subject!, charge);
      }
      const priceOf = (pricePerHour: number) => withMarkup(toMicro(pricePerHour), MARKUP_PERCENT);
      const lifetimeOf = (id: string) => {
        const row = byId.get(id)!;
        return row.terminatedAt! - row.createdAt;
      };
      const expected = new Map(
        rows.map((r) => [
          r.id,
          r.pricePerHour === null ? 0 : costOfTime(priceOf(r.pricePerHour), lifetimeOf(r.id)),
        ]),
      );
      const mismatched = rows.flatMap((r) => {
        const charged = chargeOf.get(r.id)?.amount ?? 0;
        return charged === expected.get(r.id)
          ? []
          : [
              `${r.id}: charged ${charged}, recorded ${lifetimeOf(r.id)} ms × ${r.pricePerHour}/h = ${expected.get(r.id)}`,
            ];
      });
      assert.deepEqual(mismatched, [], "each instance charged its recorded instance-seconds × its price");
      for (const instance of lost) {
        assert.equal(chargeOf.get(rowOf(instance.labels)!.id), undefined, "a lost create is not charged");
      }
      const charged = sumOf(charges.map((c) => c.amount));
      assert.equal(charged, sumOf(expected.values()), "total charged = Σ recorded instance-seconds × price");

      const faults = sim.injectedFaults();
      const launchFaults = faults.launch ?? {};
      for (const kind of ["server_error", "rate_limited", "timeout", "no_capacity"] satisfies SimFault[]) {
        assert.ok((launchFaults[kind] ?? 0) > 0, `the market refused launches with ${kind}`);
      }
      assert.ok((faults.running?.preemption ?? 0) > 0, "the market preempted instances");
      // A timed-out create leaves a row ended at once ("launch failed: …"); a restart between the
      // create and its record leaves one in `provisioning` that the next control plane ends later.
      const lostToTimeouts = lost.filter((i) =>
        rowOf(i.labels)!.terminationReason?.startsWith("launch failed"),
      );
      assert.ok(lostToTimeouts.length > 0, "some creates' answers timed out after the instance was made");
      assert.ok(lost.length > lostToTimeouts.length, "some creates' answers came after a restart");

      const failedCalls: Partial<Record<SimFault, number>> = {};
      for (const kinds of Object.values(faults)) {
        for (const [kind, count] of Object.entries(kinds) as [SimFault, number][]) {
          failedCalls[kind] = (failedCalls[kind] ?? 0) + count;
        }
      }
      const marketSeconds = (list: typeof made) => sumOf(list.map((i) => (i.endedAt! - i.createdAt) / 1000));
      const recordedSet = new Set(recorded.map((r) => r.providerInstanceId));
      const figures = {
        dialect: dialect.name,
        launches: LAUNCHES,
        restarts: RESTARTS,
        launched: storm.launched,
        launch_calls_failed: storm.refused,
        faults_by_call: faults,
        faults_by_kind: failedCalls,
        instances_made_at_market: made.length,
        instances_recorded: recorded.length,
        lost_creates_found_by_reconciler: {
          answer_timed_out: lostToTimeouts.length,
          answered_after_a_restart: lost.length - lostToTimeouts.length,
        },
        seconds_until_the_control_plane_ended_all_it_knew: settled,
        reconciler_passes_after_end: reconcilerPasses,
        seconds_until_none_left: endWaitS,
        leaked,
        recorded_instance_seconds: Math.round(sumOf(recorded.map((r) => lifetimeOf(r.id))) / 10) / 100,
        charged: formatMicro(charged),
        instance_seconds_times_price: formatMicro(sumOf(expected.values())),
        instances_charged: charges.length,
        market_instance_seconds_recorded:
          Math.round(marketSeconds(made.filter((i) => recordedSet.has(i.id))) * 100) / 100,
        market_instance_seconds_lost_creates: Math.round(marketSeconds(lost) * 100) / 100,
        wall_s: Math.round((performance.now() - started) / 100) / 10,
      };
      t.diagnostic(JSON.stringify(figures));
    });
  });
}
