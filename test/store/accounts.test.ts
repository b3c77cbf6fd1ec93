import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { newId } from "../../src/domain/ids.ts";
import { grantEntry, holdEntry, refundEntry, settleEntry } from "../../src/domain/ledger.ts";
import { costOfTime } from "../../src/domain/money.ts";
import type { Store } from "../../src/store/store.ts";
import { DIALECTS, notebookJob, type StoreFixture } from "../helpers/stores.ts";

const PRICE_PER_MS = 3_600_000; // 3.6 $/h: 1 µ per millisecond, so costs read as durations.

const newJob = notebookJob;

const compute = (instance: string, share = 1) => ({
  instance_id: instance,
  provider: "local",
  gpus: [],
  price_micro_per_hour: PRICE_PER_MS,
  share,
});

for (const dialect of DIALECTS) {
  describe(`accounts and ledger conformance: ${dialect.name}`, () => {
    let fixture: StoreFixture;
    let store: Store;
    let orgSeq = 0;
    const freshOrg = async () => {
      const id = `org_${dialect.name}_${++orgSeq}_${Date.now().toString(36)}`;
      await store.accounts.ensureOrg(id, id, 0);
      return id;
    };

    before(async () => {
      fixture = await dialect.fixture();
      store = fixture.open();
      await store.migrate();
      await store.accounts.insertUser({
        id: "user_a",
        email: "a@example.org",
        name: "A",
        platformAdmin: false,
        createdAt: 0,
        passwordHash: null,
      });
    });
    after(() => fixture.cleanup());

    it("keeps users, orgs and memberships; an email is taken once, case-insensitively", async () => {
      const org = await store.accounts.createOrg({ id: newId("org"), name: "Lab", createdAt: 5 }, "user_a");
      assert.equal(org.maxRunningJobs, null);
      assert.deepEqual(await store.accounts.getMembership(org.id, "user_a"), {
        orgId: org.id,
        userId: "user_a",
        role: "owner",
        createdAt: 5,
      });
      await assert.rejects(
        store.accounts.insertUser({
          id: "user_dup",
          email: "a@example.org",
          name: "dup",
          platformAdmin: false,
          createdAt: 0,
          passwordHash: null,
        }),
        (error: Error & { code?: string }) => error.code === "email_taken",
      );
      assert.equal((await store.accounts.findUserByEmail("A@Example.org"))?.id, "user_a");
      const limited = await store.accounts.setOrgLimits(org.id, { maxRunningJobs: 2, defaultPriority: 7 });
      assert.deepEqual([limited?.maxRunningJobs, limited?.defaultPriority, limited?.maxGpus], [2, 7, null]);
      assert.deepEqual(await store.accounts.setOrgLimits(org.id, {}), limited, "nothing to change");
      assert.equal(await store.accounts.setOrgLimits("org_missing", {}), null);
    });

    it("finds a key with its user's current role; expired, revoked and removed members' keys stop at once", async () => {
      const org = await store.accounts.createOrg({ id: newId("org"), name: "Keys", createdAt: 0 }, "user_a");
      const key = (id: string, expiresAt: number | null) => ({
        id,
        orgId: org.id,
        userId: "user_a",
        name: id,
        prefix: "hgr_xx",
        scopes: ["read" as const, "write" as const],
        createdAt: 0,
        expiresAt,
        revokedAt: null,
        hash: `hash_${id}_${org.id}`,
      });
      await store.accounts.insertApiKey(key("k1", null));
      await store.accounts.insertApiKey(key("k2", 10_000));
      const found = await store.accounts.findKeyPrincipal(`hash_k1_${org.id}`, 5_000);
      assert.deepEqual(found, {
        keyId: "k1",
        orgId: org.id,
        userId: "user_a",
        scopes: ["read", "write"],
        role: "owner",
        platformAdmin: false,
        expiresAt: null,
      });
      assert.equal((await store.accounts.findKeyPrincipal(`hash_k2_${org.id}`, 9_999))?.expiresAt, 10_000);
      assert.equal(await store.accounts.findKeyPrincipal(`hash_k2_${org.id}`, 10_000), null, "expired");
      const revoked = await store.accounts.revokeApiKey(org.id, "k1", 6_000);
      assert.equal(revoked?.revokedAt, 6_000);
      assert.equal(await store.accounts.findKeyPrincipal(`hash_k1_${org.id}`, 6_001), null, "revoked");
      assert.equal(await store.accounts.revokeApiKey("org_elsewhere", "k2", 6_000), null, "scoped by org");
      await store.accounts.removeMembership(org.id, "user_a", 7_000);
      assert.equal(
        await store.accounts.findKeyPrincipal(`hash_k2_${org.id}`, 7_001),
        null,
        "no longer a member",
      );
    });

    it("uses a refresh token and an invitation once each, even when used concurrently", async () => {
      const org = await store.accounts.createOrg({ id: newId("org"), name: "Once", createdAt: 0 }, "user_a");
      await store.accounts.insertRefreshToken({
        id: newId("rt"),
        userId: "user_a",
        orgId: org.id,
        createdAt: 0,
        expiresAt: 100_000,
        revokedAt: null,
        hash: `rt_${org.id}`,
      });
      const uses = await Promise.all(
        [1, 2, 3].map(() => store.accounts.consumeRefreshToken(`rt_${org.id}`, 50)),
      );
      assert.equal(uses.filter(Boolean).length, 1);
      await store.accounts.insertInvitation({
        id: newId("inv"),
        orgId: org.id,
        email: "b@example.org",
        role: "viewer",
        createdBy: "user_a",
        createdAt: 0,
        expiresAt: 100,
        acceptedAt: null,
        hash: `inv_${org.id}`,
      });
      assert.equal(await store.accounts.acceptInvitation(`inv_${org.id}`, 100), null, "expired");
    });

    it("writes each ledger entry once by key and holds only what the balance covers", async () => {
      const org = await freshOrg();
      assert.equal(await store.ledger.post([grantEntry(org, "g1", 1_000_000, "start")], 1), 1);
      assert.equal(await store.ledger.post([grantEntry(org, "g1", 1_000_000, "start")], 2), 0);
      const tooBig = await store.ledger.postHoldIfCovered(holdEntry(org, "run_big", 1_000_001, null), 3);
      assert.equal(tooBig.posted, false);
      assert.equal(tooBig.balances.available, 1_000_000);
      // Concurrent holds of 400,000 each: only two fit in 1,000,000.
      const holds = await Promise.all(
        [1, 2, 3, 4].map((i) => store.ledger.postHoldIfCovered(holdEntry(org, `run_${i}`, 400_000, null), 4)),
      );
      assert.equal(holds.filter((h) => h.posted).length, 2);
      const balances = await store.ledger.balances(org);
      assert.deepEqual(balances, { external: -1_000_000, available: 200_000, held: 800_000, spent: 0 });
    });

    it("records each attempt's usage and charge in the transaction that ends it; a finish delivered twice charges once", async () => {
      const org = await freshOrg();
      await store.ledger.post([grantEntry(org, "g", 100_000_000, null)], 0);
      const job = await store.enqueue(newJob(org));
      await store.ledger.postHoldIfCovered(holdEntry(org, job.id, 50_000, "user_a"), 0);
      const [claimed] = await store.claim({
        owner: "inst_1",
        limit: 1,
        leaseMs: 60_000,
        now: 10_000,
        compute: compute("inst_1"),
      });
      assert.equal(claimed?.id, job.id);
      const lease = { jobId: job.id, leaseToken: claimed!.leaseToken! };
      const [first, second] = await Promise.all([
        store.finish(lease, { status: "succeeded" }, 12_345),
        store.finish(lease, { status: "succeeded" }, 12_400),
      ]);
      assert.equal([first, second].filter(Boolean).length, 1);
      // Whichever delivery came first ended the attempt; the other changed nothing.
      const endedAt = first ? 12_345 : 12_400;
      const cost = endedAt - 10_000;
      const usage = await store.ledger.usageOfJob(org, job.id);
      assert.deepEqual(
        usage.map((u) => [u.attempt, u.startedAt, u.endedAt, u.costMicro, u.instanceId, u.userId]),
        [[1, 10_000, endedAt, cost, "inst_1", "user_a"]],
      );
      assert.equal(await store.ledger.heldFor(org, job.id), 50_000 - cost);
      const [open] = (await store.ledger.openHolds(1000)).filter((h) => h.orgId === org);
      assert.equal(open?.subject, job.id);
      await store.ledger.post(
        [settleEntry(org, job.id, await store.ledger.heldFor(org, job.id), "user_a")],
        13_000,
      );
      assert.equal((await store.ledger.openHolds(1000)).filter((h) => h.orgId === org).length, 0);
      assert.deepEqual(await store.ledger.balances(org), {
        external: -100_000_000,
        available: 100_000_000 - cost,
        held: 0,
        spent: cost,
      });
      const byUser = await store.ledger.usage({ orgId: org, from: 0, to: 100_000, groupBy: "user" });
      assert.deepEqual(byUser, [{ group: "user_a", attempts: 1, busyMs: cost, costMicro: cost }]);
      const byDay = await store.ledger.usage({ orgId: org, from: 0, to: 100_000, groupBy: "day" });
      assert.equal(byDay[0]?.group, "1970-01-01");
    });

    it("charges released, reaped and retried attempts for the time they held their instance", async () => {
      const org = await freshOrg();
      const job = await store.enqueue(newJob(org, { maxAttempts: 3 }));
      const claimAt = (now: number, owner: string) =>
        store.claim({ owner, limit: 1, leaseMs: 1_000, now, compute: compute(owner) });
      const [one] = await claimAt(1_000, "inst_a");
      await store.release({ jobId: job.id, leaseToken: one!.leaseToken! }, 1_500);
      const [two] = await claimAt(2_000, "inst_b");
      await store.reapExpired(3_500, 0);
      const [three] = await claimAt(4_000, "inst_c");
      await store.finish(
        { jobId: job.id, leaseToken: three!.leaseToken! },
        { status: "failed", error: { code: "boom", message: "x", retryable: false } },
        4_250,
      );
      assert.ok(two);
      const usage = await store.ledger.usageOfJob(org, job.id);
      assert.deepEqual(
        usage.map((u) => [u.instanceId, u.costMicro]),
        [
          ["inst_a", 500],
          ["inst_b", 1_500],
          ["inst_c", 250],
        ],
      );
      assert.equal((await store.ledger.balances(org)).spent, 2_250);
    });

    it("bills an ended instance's time no run used to its org, once", async () => {
      const org = await freshOrg();
      await store.insertInstance({
        id: `inst_${org}`,
        orgId: org,
        provider: "sim",
        gpus: [],
        bootstrapTokenHash: `boot_${org}`,
        createdAt: 0,
      });
      await store.recordLaunch(`inst_${org}`, {
        providerInstanceId: "p1",
        machineId: "m1",
        pricePerHour: 3.6,
      });
      await store.transitionInstance(`inst_${org}`, ["provisioning"], "terminated", 10_000);
      const due = (await store.ledger.instancesToBill(1000)).find((i) => i.id === `inst_${org}`);
      assert.deepEqual(due, {
        id: `inst_${org}`,
        orgId: org,
        pricePerHour: 3.6,
        lifetimeMs: 10_000,
        usedMicro: 0,
      });
      await store.ledger.markInstanceBilled(`inst_${org}`, null, 11_000);
      assert.equal(
        (await store.ledger.instancesToBill(1000)).find((i) => i.id === `inst_${org}`),
        undefined,
      );
    });

    it("stops an org's work with a reason: queued cancelled at once, running flagged, batches too", async () => {
      const org = await freshOrg();
      const queued = await store.enqueue(newJob(org));
      const running = await store.enqueue(newJob(org));
      const otherUser = await store.enqueue(newJob(org, { userId: "user_b" }));
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 60_000, now: 2_000 });
      assert.equal(claimed?.id, queued.id);
      const reason = { code: "budget_exhausted", message: "spent", retryable: false };
      const stopped = await store.requestCancelOf(org, "user_a", reason, 3_000);
      assert.deepEqual(new Set(stopped), new Set([queued.id, running.id]));
      assert.equal((await store.getJob(org, running.id))?.status, "cancelled");
      assert.equal((await store.getJob(org, otherUser.id))?.status, "queued");
      const flagged = await store.getJob(org, queued.id);
      assert.equal(flagged?.cancelRequested, true);
      const ended = await store.finish(
        { jobId: queued.id, leaseToken: claimed!.leaseToken! },
        {
          status: "cancelled",
          error: { code: "cancelled", message: "Cancelled by request", retryable: false },
        },
        3_500,
      );
      assert.equal(ended?.error?.code, "budget_exhausted", "the stop's reason is kept");
      await store.requestCancel(org, otherUser.id, 4_000);
    });

    it("shares claims fairly between orgs and holds each org's running-jobs limit", async () => {
      const heavy = await freshOrg();
      const light = await freshOrg();
      const owner = `fair_${dialect.name}`;
      for (let i = 0; i < 4; i++) await store.enqueue(newJob(heavy, { createdAt: 1, runAt: 1 }));
      const heavyFirst = await store.claim({ owner, limit: 1, leaseMs: 60_000, now: 2_000, fairShare: true });
      assert.equal(heavyFirst[0]?.orgId, heavy);
      const lightJob = await store.enqueue(newJob(light, { createdAt: 2, runAt: 2 }));
      // FIFO would take heavy's older jobs; fair share takes the org running nothing.
      const next = await store.claim({ owner, limit: 1, leaseMs: 60_000, now: 2_000, fairShare: true });
      assert.equal(next[0]?.id, lightJob.id);
      await store.accounts.setOrgLimits(heavy, { maxRunningJobs: 2 });
      const more = await store.claim({ owner, limit: 10, leaseMs: 60_000, now: 2_000 });
      const heavyRunning = more.filter((j) => j.orgId === heavy).length;
      assert.equal(heavyRunning, 1, "one more heavy job reaches its limit of 2");
      assert.equal(
        (await store.claim({ owner, limit: 10, leaseMs: 60_000, now: 2_000 })).filter(
          (j) => j.orgId === heavy,
        ).length,
        0,
      );
      // Its running jobs sit on one instance (`owner`): an instance limit of 1 keeps it off any other.
      await store.accounts.setOrgLimits(heavy, { maxRunningJobs: null, maxInstances: 1 });
      const elsewhere = { owner: "another_instance", limit: 1, leaseMs: 60_000, now: 2_000 };
      assert.equal((await store.claim(elsewhere)).length, 0);
      await store.accounts.setOrgLimits(heavy, { maxInstances: 2 });
      assert.equal((await store.claim(elsewhere))[0]?.orgId, heavy);
      await store.releaseHeldBy("another_instance", 3_000);
      await store.releaseHeldBy(owner, 3_000);
      await store.requestCancelOf(
        heavy,
        null,
        { code: "done", message: "test over", retryable: false },
        3_000,
      );
      await store.requestCancelOf(
        light,
        null,
        { code: "done", message: "test over", retryable: false },
        3_000,
      );
    });

    it("keeps the books exact under 1,000 concurrent completions, retries and refunds", async () => {
      const org = await freshOrg();
      const others = [fixture.open(), fixture.open()];
      await store.ledger.post([grantEntry(org, "g", 1_000_000_000, null)], 0);
      const batch = await store.insertBatch(
        {
          id: newId("batch"),
          orgId: org,
          userId: "user_a",
          name: "books",
          model: `books-${org}`,
          modelVersion: "1",
          priority: 0,
          maxConcurrent: 1_000,
          score: { name: "affinity", unit: "kcal/mol", better: "lower" },
          spec: {},
          createdAt: 0,
        },
        Array.from({ length: 1_000 }, () => ({ id: newId("job"), spec: { model: "books" } })),
        { maxAttempts: 3, backoffMinMs: 0, backoffMaxMs: 0, timeoutMs: 3_600_000 },
      );
      await store.ledger.postHoldIfCovered(holdEntry(org, batch.id, 5_000_000, "user_a"), 0);
      const claimAll = async (now: number) => {
        const jobs = [];
        for (;;) {
          const unit = await store.claimBatchChildren({
            owner: `inst_${now}`,
            models: [`books-${org}`],
            limitFor: () => 100,
            leaseMs: 60_000,
            now,
            compute: compute(`inst_${now}`),
          });
          if (!unit) return jobs;
          jobs.push(...unit.jobs);
        }
      };
      const firstRound = await claimAll(1_000);
      assert.equal(firstRound.length, 1_000);
      const stores = [store, ...others];
      // Every 10th attempt fails (and is retried), every 7th finish is delivered twice, from another process.
      await Promise.all(
        firstRound.map((job, i) => {
          const lease = { jobId: job.id, leaseToken: job.leaseToken! };
          const outcome =
            i % 10 === 0
              ? ({ status: "failed", error: { code: "flaky", message: "x", retryable: true } } as const)
              : ({ status: "succeeded", score: -i / 100 } as const);
          const end = 1_000 + 1_000 + i;
          const finishes = [stores[i % 3]!.finish(lease, outcome, end)];
          if (i % 7 === 0) finishes.push(stores[(i + 1) % 3]!.finish(lease, outcome, end));
          return Promise.all(finishes);
        }),
      );
      const retried = await claimAll(5_000);
      assert.equal(retried.length, 100);
      await Promise.all(
        retried.map((job, i) =>
          stores[i % 3]!.finish(
            { jobId: job.id, leaseToken: job.leaseToken! },
            { status: "succeeded" },
            5_500,
          ),
        ),
      );
      // Refunds of the retried attempts, each requested twice at once.
      await Promise.all(
        firstRound
          .filter((_, i) => i % 10 === 0)
          .flatMap((job) =>
            [0, 1].map((k) =>
              stores[k]!.ledger.post([refundEntry(org, `retry:${job.id}`, 10, batch.id, null)], 6_000),
            ),
          ),
      );
      // Claimed 100 to a unit, each child pays 1/100 of its instance while it runs.
      const charged =
        firstRound.reduce((sum, _job, i) => sum + costOfTime(PRICE_PER_MS, 1_000 + i, 100), 0) +
        100 * costOfTime(PRICE_PER_MS, 500, 100);
      const balances = await store.ledger.balances(org);
      assert.equal(balances.spent, charged - 100 * 10);
      assert.equal(
        Object.values(balances).reduce((a, b) => a + b, 0),
        0,
        "the accounts sum to zero",
      );
      const entries = await store.ledger.listEntries(org, 10_000);
      const sum = (account: string) =>
        entries.reduce(
          (total, e) => total + (e.to === account ? e.amount : 0) - (e.from === account ? e.amount : 0),
          0,
        );
      assert.deepEqual(
        { available: sum("available"), held: sum("held"), spent: sum("spent") },
        { available: balances.available, held: balances.held, spent: balances.spent },
        "each balance is the sum of its entries",
      );
      assert.equal(entries.filter((e) => e.kind === "charge").length, 1_100, "one charge per attempt");
      assert.equal(entries.filter((e) => e.kind === "refund").length, 100, "one refund per reference");
      assert.equal((await store.getBatch(org, batch.id))?.status, "succeeded");
    });
  });
}
