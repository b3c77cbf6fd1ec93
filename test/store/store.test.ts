import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { newId } from "../../src/domain/ids.ts";
import type { NewJob, Store } from "../../src/store/store.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";

const ORG = "org_test";
const OTHER_ORG = "org_other";

function newJob(overrides: Partial<NewJob> = {}): NewJob {
  return {
    id: newId("run"),
    orgId: ORG,
    kind: "notebook",
    notebookId: null,
    spec: { n: 1 },
    priority: 0,
    maxAttempts: 3,
    backoffMinMs: 10_000,
    backoffMaxMs: 300_000,
    timeoutMs: 3_600_000,
    runAt: 1_000,
    createdAt: 1_000,
    ...overrides,
  };
}

for (const dialect of DIALECTS) {
  describe(`store conformance: ${dialect.name}`, () => {
    let fixture: StoreFixture;
    let store: Store;

    before(async () => {
      fixture = await dialect.fixture();
      store = fixture.open();
      await store.migrate();
      await store.accounts.ensureOrg(ORG, "test", 0);
      await store.accounts.ensureOrg(OTHER_ORG, "other", 0);
    });
    after(() => fixture.cleanup());

    it("migrations are safe when several processes start at once", async () => {
      const others = [fixture.open(), fixture.open(), fixture.open()];
      await Promise.all(others.map((s) => s.migrate()));
      assert.equal(await others[0]!.accounts.countApiKeys(), await store.accounts.countApiKeys());
    });

    it("claims by priority, then first in first out", async () => {
      const low = await store.enqueue(newJob({ priority: 0 }));
      const high = await store.enqueue(newJob({ priority: 5 }));
      const low2 = await store.enqueue(newJob({ priority: 0 }));
      const later = await store.enqueue(newJob({ runAt: 50_000 }));
      const claimed = await store.claim({ owner: "w1", limit: 10, leaseMs: 1000, now: 2_000 });
      assert.deepEqual(
        claimed.map((j) => j.id),
        [high.id, low.id, low2.id],
      );
      assert.ok(claimed.every((j) => j.status === "running" && j.attempts === 1 && j.leaseOwner === "w1"));
      assert.ok(!claimed.some((j) => j.id === later.id), "a job whose run_at is in the future waits");
      for (const job of claimed) {
        await store.finish({ jobId: job.id, leaseToken: job.leaseToken! }, { status: "succeeded" }, 3_000);
      }
      await store.requestCancel(ORG, later.id, 3_000);
    });

    it("hands jobs asking for GPUs only to instances that have them, and counts the demand per shape", async () => {
      const cpu = await store.enqueue(newJob());
      const one = await store.enqueue(newJob({ gpu: { type: "RTX4090", count: 1 } }));
      const two = await store.enqueue(newJob({ gpu: { type: "RTX4090", count: 2 } }));
      const h100 = await store.enqueue(newJob({ gpu: { type: "H100", count: 1 } }));
      const raced = await store.enqueue(newJob({ gpu: { type: "H100", count: 1 }, strategy: "race" }));
      const work = await store.readyWork(2_000);
      assert.equal(work.jobs, 1);
      assert.deepEqual(
        work.gpuJobs.sort(
          (a, b) =>
            a.type.localeCompare(b.type) ||
            a.count - b.count ||
            String(a.strategy).localeCompare(String(b.strategy)),
        ),
        [
          { type: "H100", count: 1, strategy: null, jobs: 1 },
          { type: "H100", count: 1, strategy: "race", jobs: 1 },
          { type: "RTX4090", count: 1, strategy: null, jobs: 1 },
          { type: "RTX4090", count: 2, strategy: null, jobs: 1 },
        ],
      );
      const claim = (placement: Parameters<Store["claim"]>[0]["placement"]) =>
        store.claim({
          owner: "w",
          limit: 10,
          leaseMs: 1000,
          now: 2_000,
          ...(placement ? { placement } : {}),
        });
      const cloudOne = await claim({ cpuJobs: false, gpu: { type: "RTX4090", count: 1 }, anyGpu: false });
      assert.deepEqual(
        cloudOne.map((j) => j.id),
        [one.id],
        "a 1-GPU RTX 4090 takes neither CPU work nor a 2-GPU ask",
      );
      const here = await claim({ cpuJobs: true, gpu: null, anyGpu: false });
      assert.deepEqual(
        here.map((j) => j.id),
        [cpu.id],
        "this host without a cloud's GPUs takes CPU work only",
      );
      const fallback = await claim({ cpuJobs: true, gpu: null, anyGpu: true });
      assert.deepEqual(
        fallback.map((j) => j.id).sort(),
        [two.id, h100.id, raced.id].sort(),
        "no cloud: this host takes all",
      );
      for (const job of [...cloudOne, ...here, ...fallback]) {
        await store.finish({ jobId: job.id, leaseToken: job.leaseToken! }, { status: "succeeded" }, 3_000);
      }
    });

    it("never hands one job to two concurrent claimers", async () => {
      const ids = new Set<string>();
      for (let i = 0; i < 200; i++) ids.add((await store.enqueue(newJob())).id);
      const stores = [store, fixture.open(), fixture.open()];
      const seen: string[] = [];
      await Promise.all(
        stores.flatMap((s, i) =>
          [0, 1].map(async (w) => {
            for (;;) {
              const batch = await s.claim({ owner: `w${i}-${w}`, limit: 7, leaseMs: 60_000, now: 5_000 });
              if (batch.length === 0) return;
              for (const job of batch) {
                seen.push(job.id);
                await s.finish(
                  { jobId: job.id, leaseToken: job.leaseToken! },
                  { status: "succeeded" },
                  5_001,
                );
              }
            }
          }),
        ),
      );
      assert.equal(seen.length, 200);
      assert.equal(new Set(seen).size, 200);
      assert.deepEqual(new Set(seen), ids);
    });

    it("heartbeats renew a lease only for the holder of its token", async () => {
      const job = await store.enqueue(newJob());
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 10_000 });
      assert.equal(claimed?.id, job.id);
      const lease = { jobId: job.id, leaseToken: claimed!.leaseToken! };
      const beat = await store.heartbeat(lease, 10_500, 1000, { done: 1, total: 3, phase: "cell 1/3" });
      assert.deepEqual(beat, { held: true, cancelRequested: false });
      assert.deepEqual(await store.heartbeat({ jobId: job.id, leaseToken: "stale" }, 10_500, 1000), {
        held: false,
      });
      const current = await store.getJob(ORG, job.id);
      assert.equal(current?.leaseExpiresAt, 11_500);
      assert.deepEqual(current?.progress, { done: 1, total: 3, phase: "cell 1/3" });
      await store.finish(lease, { status: "succeeded" }, 11_000);
      assert.deepEqual(
        await store.heartbeat(lease, 11_100, 1000),
        { held: false },
        "a finished job has no lease",
      );
    });

    it("renews a unit's leases in one call, only where the token still holds", async () => {
      const jobs = [
        await store.enqueue(newJob()),
        await store.enqueue(newJob()),
        await store.enqueue(newJob()),
      ];
      const claimed = await store.claim({ owner: "w", limit: 3, leaseMs: 1000, now: 12_000 });
      assert.equal(claimed.length, 3);
      const leases = claimed.map((job) => ({ jobId: job.id, leaseToken: job.leaseToken! }));
      const [done, cancelled, running] = leases;
      await store.finish(done!, { status: "succeeded" }, 12_100);
      const cancelledJob = claimed.find((job) => job.id === cancelled!.jobId)!;
      await store.requestCancel(ORG, cancelledJob.id, 12_200);
      const beats = await store.heartbeatMany(
        [...leases, { jobId: running!.jobId, leaseToken: "stale" }],
        12_500,
        1000,
      );
      assert.deepEqual(
        beats,
        new Map([
          [done!.jobId, { held: false }],
          [cancelled!.jobId, { held: true, cancelRequested: true }],
          [running!.jobId, { held: true, cancelRequested: false }],
        ]),
      );
      assert.equal((await store.getJob(ORG, running!.jobId))?.leaseExpiresAt, 13_500);
      assert.equal((await store.getJob(ORG, done!.jobId))?.leaseExpiresAt, null);
      assert.deepEqual(await store.heartbeatMany([], 12_600, 1000), new Map());
      assert.ok(jobs.every((job) => claimed.some((c) => c.id === job.id)));
      await store.finish(running!, { status: "succeeded" }, 12_700);
      await store.finish(cancelled!, { status: "cancelled" }, 12_700);
    });

    it("retries a retryable failure with backoff and fails when attempts run out", async () => {
      const job = await store.enqueue(newJob({ maxAttempts: 2, backoffMinMs: 1000, backoffMaxMs: 4000 }));
      const [first] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 20_000 });
      const error = { code: "agent_crashed", message: "boom", retryable: true };
      const retried = await store.finish(
        { jobId: job.id, leaseToken: first!.leaseToken! },
        { status: "failed", error },
        20_100,
      );
      assert.equal(retried?.status, "queued");
      assert.ok(retried!.runAt >= 21_100 && retried!.runAt <= 22_100, `run_at ${retried?.runAt}`);
      assert.equal((await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 20_200 })).length, 0);
      const [second] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 30_000 });
      assert.equal(second?.attempts, 2);
      const failed = await store.finish(
        { jobId: job.id, leaseToken: second!.leaseToken! },
        { status: "failed", error },
        30_100,
      );
      assert.equal(failed?.status, "failed");
      assert.deepEqual(failed?.error, error);
      assert.equal(failed?.finishedAt, 30_100);
    });

    it("does not retry a failure marked not retryable", async () => {
      const job = await store.enqueue(newJob());
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 40_000 });
      const done = await store.finish(
        { jobId: job.id, leaseToken: claimed!.leaseToken! },
        { status: "failed", error: { code: "cell_error", message: "ValueError", retryable: false } },
        40_001,
      );
      assert.equal(done?.status, "failed");
      assert.equal(done?.attempts, 1);
    });

    it("puts a job whose lease lapsed back in the queue, and fails one past its timeout", async () => {
      const lapsed = await store.enqueue(newJob({ backoffMinMs: 100, backoffMaxMs: 100 }));
      const slow = await store.enqueue(newJob({ timeoutMs: 500 }));
      const claimed = await store.claim({ owner: "w", limit: 2, leaseMs: 1000, now: 50_000 });
      assert.equal(claimed.length, 2);
      const slowLease = claimed.find((j) => j.id === slow.id)!;
      await store.heartbeat({ jobId: slow.id, leaseToken: slowLease.leaseToken! }, 50_900, 10_000);
      const first = await store.reapExpired(51_001, 1_000);
      assert.deepEqual(
        first.map((j) => j.id),
        [lapsed.id],
        "the timeout has a grace period",
      );
      await store.heartbeat({ jobId: slow.id, leaseToken: slowLease.leaseToken! }, 51_500, 10_000);
      const byId = new Map([...first, ...(await store.reapExpired(52_001, 1_000))].map((j) => [j.id, j]));
      assert.equal(byId.get(lapsed.id)?.status, "queued");
      assert.equal(byId.get(lapsed.id)?.error?.code, "lease_expired");
      assert.equal(byId.get(slow.id)?.status, "failed");
      assert.equal(byId.get(slow.id)?.error?.code, "timeout");
      const [again] = await store.claim({ owner: "w2", limit: 1, leaseMs: 1000, now: 60_000 });
      assert.equal(again?.id, lapsed.id);
      assert.equal(again?.attempts, 2);
      await store.finish(
        { jobId: again!.id, leaseToken: again!.leaseToken! },
        { status: "succeeded" },
        60_001,
      );
    });

    it("cancels queued jobs at once and flags running ones for their agent", async () => {
      const queued = await store.enqueue(newJob({ runAt: 99_999_999 }));
      const cancelled = await store.requestCancel(ORG, queued.id, 70_000);
      assert.equal(cancelled?.status, "cancelled");
      const running = await store.enqueue(newJob());
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 10_000, now: 70_000 });
      assert.equal(claimed?.id, running.id);
      const lease = { jobId: running.id, leaseToken: claimed!.leaseToken! };
      assert.equal((await store.requestCancel(ORG, running.id, 70_001))?.status, "running");
      assert.deepEqual(await store.heartbeat(lease, 70_002, 10_000), { held: true, cancelRequested: true });
      const done = await store.finish(lease, { status: "cancelled" }, 70_003);
      assert.equal(done?.status, "cancelled");
      assert.equal(await store.requestCancel(OTHER_ORG, running.id, 70_004), null, "scoped by org");
    });

    it("a job cancelled while its agent is lost ends cancelled, not retried", async () => {
      const job = await store.enqueue(newJob());
      await store.claim({ owner: "w", limit: 1, leaseMs: 100, now: 80_000 });
      await store.requestCancel(ORG, job.id, 80_001);
      const [reaped] = await store.reapExpired(90_000, 0);
      assert.equal(reaped?.id, job.id);
      assert.equal(reaped?.status, "cancelled");
    });

    it("release gives a job back without spending an attempt", async () => {
      const job = await store.enqueue(newJob());
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 100_000 });
      const released = await store.release({ jobId: job.id, leaseToken: claimed!.leaseToken! }, 100_001);
      assert.equal(released?.status, "queued");
      assert.equal(await store.release({ jobId: job.id, leaseToken: claimed!.leaseToken! }, 100_001), null);
      const back = await store.getJob(ORG, job.id);
      assert.equal(back?.status, "queued");
      assert.equal(back?.attempts, 0);
      const [again] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 100_002 });
      await store.finish({ jobId: job.id, leaseToken: again!.leaseToken! }, { status: "succeeded" }, 100_003);
    });

    it("release cancels a job whose cancel was requested while it ran", async () => {
      const job = await store.enqueue(newJob({ priority: 100 }));
      const [claimed] = await store.claim({ owner: "w", limit: 1, leaseMs: 1000, now: 100_010 });
      assert.equal(claimed?.id, job.id);
      await store.requestCancel(ORG, job.id, 100_011);
      const released = await store.release({ jobId: job.id, leaseToken: claimed!.leaseToken! }, 100_012);
      assert.equal(released?.status, "cancelled");
      assert.equal(released?.finishedAt, 100_012);
    });

    it("releases every job one owner holds, and only those", async () => {
      const mine = [
        await store.enqueue(newJob({ priority: 100 })),
        await store.enqueue(newJob({ priority: 100 })),
      ];
      const theirs = await store.enqueue(newJob({ priority: 99 }));
      await store.claim({ owner: "leaving", limit: 2, leaseMs: 1000, now: 100_020 });
      const [other] = await store.claim({ owner: "staying", limit: 1, leaseMs: 1000, now: 100_020 });
      assert.equal(other?.id, theirs.id);
      const released = await store.releaseHeldBy("leaving", 100_021);
      assert.deepEqual(released.map((j) => j.id).sort(), mine.map((j) => j.id).sort());
      assert.ok(released.every((j) => j.status === "queued" && j.attempts === 0 && j.leaseOwner === null));
      assert.equal((await store.getJob(ORG, theirs.id))?.status, "running");
      for (const job of [...mine, theirs]) await store.requestCancel(ORG, job.id, 100_022);
      await store.finish(
        { jobId: theirs.id, leaseToken: other!.leaseToken! },
        { status: "cancelled" },
        100_023,
      );
    });

    it("scopes jobs by org", async () => {
      const job = await store.enqueue(newJob({ runAt: 99_999_999 }));
      assert.equal(await store.getJob(OTHER_ORG, job.id), null);
      assert.equal((await store.getJob(ORG, job.id))?.id, job.id);
      assert.ok((await store.listJobs({ orgId: OTHER_ORG, limit: 100 })).every((j) => j.orgId === OTHER_ORG));
      await store.requestCancel(ORG, job.id, 0);
    });

    it("appends the lines of held leases once each, drops the others, and reads them after a cursor", async () => {
      const [job, other] = [await store.enqueue(newJob()), await store.enqueue(newJob())];
      const claimed = await store.claim({ owner: "w", limit: 2, leaseMs: 1000, now: 13_000 });
      assert.deepEqual(claimed.map((j) => j.id).sort(), [job!.id, other!.id].sort());
      const lease = (id: string) => ({
        jobId: id,
        leaseToken: claimed.find((j) => j.id === id)!.leaseToken!,
      });
      const entries = [1, 2, 3].map((seq) => ({
        attempt: 1,
        seq,
        ts: seq,
        stream: "stdout",
        text: `line ${seq}`,
      }));
      const line = (seq: number, text: string, attempt = 1) => ({
        attempt,
        seq,
        ts: 9,
        stream: "stderr",
        text,
      });
      assert.deepEqual(
        await store.appendLeasedLogs([
          { lease: lease(job!.id), entries },
          { lease: lease(other!.id), entries: [line(7, "x")] },
        ]),
        [],
      );
      // A request re-sent after a lost answer stores nothing twice.
      await store.appendLeasedLogs([{ lease: lease(job!.id), entries: entries.slice(1) }]);
      await store.appendLeasedLogs([{ lease: lease(job!.id), entries: [line(1, "retry", 2)] }]);
      assert.deepEqual(
        await store.appendLeasedLogs([
          { lease: { jobId: job!.id, leaseToken: "stale" }, entries: [line(9, "stale token")] },
          { lease: lease(other!.id), entries: [line(8, "y")] },
        ]),
        [job!.id],
      );
      await store.finish(lease(other!.id), { status: "succeeded" }, 13_100);
      assert.deepEqual(
        await store.appendLeasedLogs([{ lease: lease(other!.id), entries: [line(9, "after the end")] }]),
        [other!.id],
        "an ended attempt's lease no longer holds",
      );
      assert.deepEqual(await store.appendLeasedLogs([]), []);
      const all = await store.readLogs(ORG, job!.id, { attempt: 0, seq: 0 }, 100);
      assert.deepEqual(
        all.map((e) => e.text),
        ["line 1", "line 2", "line 3", "retry"],
      );
      const tail = await store.readLogs(ORG, job!.id, { attempt: 1, seq: 2 }, 100);
      assert.deepEqual(
        tail.map((e) => e.text),
        ["line 3", "retry"],
      );
      assert.deepEqual(
        (await store.readLogs(ORG, other!.id, { attempt: 0, seq: 0 }, 100)).map((e) => e.text),
        ["x", "y"],
      );
      assert.equal((await store.readLogs(OTHER_ORG, job!.id, { attempt: 0, seq: 0 }, 100)).length, 0);
      assert.deepEqual(
        await store.lastLogSeqs([
          { jobId: job!.id, attempt: 1 },
          { jobId: other!.id, attempt: 1 },
        ]),
        new Map([
          [job!.id, 3],
          [other!.id, 8],
        ]),
      );
      assert.deepEqual(
        await store.lastLogSeqs([{ jobId: job!.id, attempt: 3 }]),
        new Map([[job!.id, 0]]),
        "an attempt without lines starts at 0; another attempt's lines do not count",
      );
      assert.deepEqual(await store.lastLogSeqs([]), new Map());
      await store.finish(lease(job!.id), { status: "succeeded" }, 13_200);
    });

    it("registers an instance once per bootstrap token", async () => {
      const id = newId("inst");
      await store.insertInstance({
        id,
        orgId: ORG,
        provider: "local",
        gpus: [],
        bootstrapTokenHash: "b1",
        createdAt: 1,
      });
      assert.equal(await store.registerInstance(id, "wrong", "a1", 2), false);
      assert.equal(await store.registerInstance(id, "b1", "a1", 2), true);
      assert.equal(await store.registerInstance(id, "b1", "a2", 3), false, "the bootstrap token is one-time");
      const found = await store.findInstanceByAgentToken("a1");
      assert.equal(found?.state, "ready");
      assert.equal(await store.transitionInstance(id, ["ready", "idle"], "busy", 4), true);
      assert.equal(await store.transitionInstance(id, ["ready", "idle"], "busy", 5), false);
      assert.equal(await store.transitionInstance(id, ["busy"], "terminated", 6, "test"), true);
      assert.equal(await store.findInstanceByAgentToken("a1"), null, "a terminated instance's token is dead");
      const counts = await store.countInstancesByState();
      assert.ok(counts.terminated >= 1);
    });

    it("keeps each launch as an attempt: host, reported price, readiness and why it ended, per org", async () => {
      const provider = `hist_${newId("inst")}`;
      const launch = async (orgId: string, createdAt: number) => {
        const id = newId("inst");
        await store.insertInstance({
          id,
          orgId,
          provider,
          gpus: [],
          bootstrapTokenHash: `b_${id}`,
          createdAt,
        });
        return id;
      };
      const ready = await launch(ORG, 1_000);
      await store.recordLaunch(ready, { providerInstanceId: "pod-1", machineId: "m-7", pricePerHour: 0.44 });
      assert.equal(await store.registerInstance(ready, `b_${ready}`, `a_${ready}`, 1_500), true);
      const failed = await launch(ORG, 2_000);
      await store.recordLaunch(failed, { providerInstanceId: "pod-2", machineId: "m-7", pricePerHour: 0.44 });
      await store.transitionInstance(failed, ["provisioning"], "terminated", 2_900, "never booted");
      await launch(OTHER_ORG, 3_000);
      await launch(ORG, 10);

      const attempts = await store.listLaunchAttempts(ORG, 500, provider);
      assert.deepEqual(
        attempts.map((a) => [
          a.instanceId,
          a.machineId,
          a.pricePerHour,
          a.launchedAt,
          a.readyAt,
          a.endedAt,
          a.error,
        ]),
        [
          [failed, "m-7", 0.44, 2_000, null, 2_900, "never booted"],
          [ready, "m-7", 0.44, 1_000, 1_500, null, null],
        ],
        "newest first, only this org's, only since the given time",
      );
    });

    describe("batches", () => {
      const policy = { maxAttempts: 2, backoffMinMs: 0, backoffMaxMs: 0, timeoutMs: 60_000 };
      const newBatch = async (
        children: number,
        options: { maxConcurrent?: number; invalid?: number } = {},
      ) => {
        const model = `model-${newId("batch")}`;
        const batch = await store.insertBatch(
          {
            id: newId("batch"),
            orgId: ORG,
            name: "screen",
            model,
            modelVersion: "1",
            priority: 0,
            maxConcurrent: options.maxConcurrent ?? 100,
            score: { name: "affinity", unit: "kcal/mol", better: "lower" },
            spec: { target: "x" },
            createdAt: 1_000,
          },
          Array.from({ length: children }, (_, i) => ({
            id: newId("job"),
            spec: { ligand: i },
            ...(i < (options.invalid ?? 0)
              ? { failure: { code: "invalid_smiles", message: "bad", retryable: false } }
              : {}),
          })),
          policy,
        );
        return { batch, model };
      };
      const claim = (model: string, limit: number, now = 2_000) =>
        store.claimBatchChildren({
          owner: "inst",
          models: [model],
          limitFor: () => limit,
          leaseMs: 10_000,
          now,
        });
      const lease = (job: { id: string; leaseToken: string | null }) => ({
        jobId: job.id,
        leaseToken: job.leaseToken!,
      });

      it("counts children on the batch as they are claimed and end, never by scanning", async () => {
        const { batch, model } = await newBatch(5, { invalid: 1 });
        assert.deepEqual(batch.counters, {
          total: 5,
          pending: 4,
          running: 0,
          completed: 0,
          failed: 1,
          cancelled: 0,
        });
        assert.equal(batch.status, "queued");
        const claimed = await claim(model, 3);
        assert.equal(claimed?.jobs.length, 3);
        assert.equal(claimed?.batch.status, "running");
        assert.deepEqual(claimed?.batch.counters, {
          total: 5,
          pending: 1,
          running: 3,
          completed: 0,
          failed: 1,
          cancelled: 0,
        });
        const [a, b, c] = claimed!.jobs;
        await store.finish(lease(a!), { status: "succeeded", score: -7.5, result: { score: -7.5 } }, 3_000);
        await store.finish(lease(b!), { status: "succeeded", score: -9.25, result: { score: -9.25 } }, 3_000);
        // Delivered twice: counted once.
        assert.equal(await store.finish(lease(b!), { status: "succeeded", score: -9.25 }, 3_001), null);
        await store.finish(
          lease(c!),
          { status: "failed", error: { code: "x", message: "x", retryable: false } },
          3_002,
        );
        const now = await store.getBatch(ORG, batch.id);
        assert.deepEqual(now?.counters, {
          total: 5,
          pending: 1,
          running: 0,
          completed: 2,
          failed: 2,
          cancelled: 0,
        });
        assert.equal(now?.bestScore, -9.25);
        assert.equal(now?.bestJobId, b!.id);
        assert.equal(now?.scoreCount, 2);
        assert.equal(now?.scoreSum, -16.75);
        assert.deepEqual((await store.getJob(ORG, a!.id))?.result, { score: -7.5 });
        const [last] = (await claim(model, 5))!.jobs;
        await store.finish(lease(last!), { status: "succeeded", score: -1 }, 4_000);
        const done = await store.getBatch(ORG, batch.id);
        assert.equal(done?.status, "succeeded");
        assert.equal(done?.finishedAt, 4_000);
        assert.equal(await claim(model, 5), null);
      });

      it("ends a packed unit's children in one call: counters, scores, retries, logs, lost leases", async () => {
        const { batch, model } = await newBatch(4);
        const [a, b, c, d] = (await claim(model, 4))!.jobs;
        // d's lease is lost first (ended by another path): the call ends the others and answers null for it.
        await store.finish(lease(d!), { status: "succeeded", score: -1 }, 2_500);
        const line = (seq: number, text: string) => ({ attempt: 1, seq, ts: 2_900, stream: "hangar", text });
        const ended = await store.finishMany(
          [
            { lease: lease(a!), outcome: { status: "succeeded", score: -6 }, logs: [line(1, "a done\n")] },
            { lease: lease(b!), outcome: { status: "succeeded", score: -8 } },
            // Named twice in one report: it ends once, and the repeat's score is not counted.
            { lease: lease(b!), outcome: { status: "succeeded", score: -50 } },
            {
              lease: lease(c!),
              outcome: { status: "failed", error: { code: "lost", message: "x", retryable: true } },
              logs: [line(1, "c one\n"), line(2, "c two\n")],
            },
            { lease: lease(d!), outcome: { status: "succeeded", score: -99 } },
          ],
          3_000,
        );
        assert.deepEqual(
          ended.map((job) => job?.status ?? null),
          ["succeeded", "succeeded", null, "queued", null],
        );
        const now = await store.getBatch(ORG, batch.id);
        assert.deepEqual(now?.counters, {
          total: 4,
          pending: 1,
          running: 0,
          completed: 3,
          failed: 0,
          cancelled: 0,
        });
        assert.equal(now?.bestScore, -8, "the lost lease's score is not counted");
        assert.equal(now?.scoreCount, 3);
        assert.equal(now?.scoreSum, -1 - 6 - 8);
        const texts = async (id: string) =>
          (await store.readLogs(ORG, id, { attempt: 0, seq: 0 }, 10)).map((e) => e.text);
        assert.deepEqual(await texts(a!.id), ["a done\n"]);
        assert.deepEqual(await texts(c!.id), ["c one\n", "c two\n"]);
        assert.deepEqual(await texts(d!.id), []);
        // Delivered again (a lost response): nothing moves twice.
        const again = await store.finishMany([{ lease: lease(a!), outcome: { status: "succeeded" } }], 3_100);
        assert.deepEqual(again, [null]);
        assert.deepEqual((await store.getBatch(ORG, batch.id))?.counters, now?.counters);
        await store.requestBatchCancel(ORG, batch.id, 5_000);
      });

      it("never runs more than max_concurrent children at once", async () => {
        const { batch, model } = await newBatch(6, { maxConcurrent: 2 });
        const first = await claim(model, 5);
        assert.equal(first?.jobs.length, 2);
        assert.equal(await claim(model, 5), null, "the batch is at its limit");
        await store.finish(lease(first!.jobs[0]!), { status: "succeeded", score: 1 }, 3_000);
        assert.equal((await claim(model, 5))?.jobs.length, 1);
        const concurrent = await Promise.all([claim(model, 5), claim(model, 5)]);
        assert.equal(concurrent.filter(Boolean).length, 0);
        const now = await store.getBatch(ORG, batch.id);
        assert.equal(now?.counters.running, 2);
        await store.requestBatchCancel(ORG, batch.id, 5_000);
      });

      it("moves retried, reaped and released children back to pending", async () => {
        const { batch, model } = await newBatch(3);
        const { jobs } = (await claim(model, 3))!;
        await store.finish(
          lease(jobs[0]!),
          { status: "failed", error: { code: "x", message: "x", retryable: true } },
          3_000,
        );
        await store.release(lease(jobs[1]!), 3_000);
        const reaped = await store.reapExpired(20_000, 0);
        assert.ok(reaped.some((j) => j.id === jobs[2]!.id));
        const now = await store.getBatch(ORG, batch.id);
        assert.deepEqual(now?.counters, {
          total: 3,
          pending: 3,
          running: 0,
          completed: 0,
          failed: 0,
          cancelled: 0,
        });
        await store.requestBatchCancel(ORG, batch.id, 30_000);
      });

      it("cancels queued children at once and flags running ones; the batch ends cancelled", async () => {
        const { batch, model } = await newBatch(4);
        const { jobs } = (await claim(model, 1))!;
        const cancelled = await store.requestBatchCancel(ORG, batch.id, 3_000);
        assert.deepEqual(cancelled?.counters, {
          total: 4,
          pending: 0,
          running: 1,
          completed: 0,
          failed: 0,
          cancelled: 3,
        });
        assert.equal(cancelled?.status, "running");
        const beat = await store.heartbeat(lease(jobs[0]!), 3_100, 10_000);
        assert.deepEqual(beat, { held: true, cancelRequested: true });
        await store.finish(lease(jobs[0]!), { status: "cancelled" }, 3_200);
        const ended = await store.getBatch(ORG, batch.id);
        assert.equal(ended?.status, "cancelled");
        assert.equal(ended?.counters.cancelled, 4);
        assert.equal(await store.getBatch(OTHER_ORG, batch.id), null, "batches are scoped by org");
      });

      it("checks a big batch under one server's lease before its children can be claimed", async () => {
        const model = `model-${newId("batch")}`;
        const base = {
          id: newId("batch"),
          orgId: ORG,
          name: "big",
          model,
          modelVersion: "1",
          priority: 0,
          maxConcurrent: 10,
          score: { name: "affinity", unit: "kcal/mol", better: "lower" as const },
          spec: { target: "x" },
          createdAt: 1_000,
        };
        const accepted = await store.insertValidatingBatch(base, 3);
        assert.equal(accepted.status, "validating");
        assert.equal(accepted.counters.total, 3);
        const claimed = await store.claimBatchValidation(2_000, 60_000);
        assert.equal(claimed?.id, accepted.id);
        assert.equal(await store.claimBatchValidation(2_001, 60_000), null, "one server checks it");
        await store.appendBatchChildren(
          claimed!,
          [
            { id: newId("job"), spec: { n: 0 } },
            {
              id: newId("job"),
              spec: { n: 1 },
              failure: { code: "invalid_ligand", message: "bad", retryable: false },
            },
          ],
          policy,
        );
        // A lapsed check starts over from nothing.
        const again = await store.claimBatchValidation(70_000, 60_000);
        assert.equal(again?.id, accepted.id);
        assert.equal(
          (await store.listBatchChildren({ orgId: ORG, batchId: accepted.id, limit: 10 })).length,
          0,
        );
        await store.appendBatchChildren(
          again!,
          [
            { id: newId("job"), spec: { n: 0 } },
            {
              id: newId("job"),
              spec: { n: 1 },
              failure: { code: "invalid_ligand", message: "bad", retryable: false },
            },
            { id: newId("job"), spec: { n: 2 } },
          ],
          policy,
        );
        assert.equal(await claim(model, 5), null, "nothing runs before the check ends");
        const opened = await store.openValidatedBatch(accepted.id, { skipped: 1 }, 71_000);
        assert.equal(opened?.status, "queued");
        assert.deepEqual(opened?.counters, {
          total: 3,
          pending: 2,
          running: 0,
          completed: 0,
          failed: 1,
          cancelled: 0,
        });
        assert.equal(opened?.spec.skipped, 1);
        assert.equal((await claim(model, 5, 72_000))?.jobs.length, 2);
        await store.requestBatchCancel(ORG, accepted.id, 73_000);
      });

      it("rejects a checked batch: its children go and the reason stays", async () => {
        const accepted = await store.insertValidatingBatch(
          {
            id: newId("batch"),
            orgId: ORG,
            name: "bad",
            model: `model-${newId("batch")}`,
            modelVersion: "1",
            priority: 0,
            maxConcurrent: 10,
            score: { name: "affinity", unit: "kcal/mol", better: "lower" },
            spec: {},
            createdAt: 1_000,
          },
          1,
        );
        const claimed = await store.claimBatchValidation(2_000, 60_000);
        await store.appendBatchChildren(claimed!, [{ id: newId("job"), spec: {} }], policy);
        const rejected = await store.rejectBatch(
          accepted.id,
          { code: "invalid_ligands", invalid: [1] },
          3_000,
        );
        assert.equal(rejected?.status, "rejected");
        assert.deepEqual(rejected?.spec.rejection, { code: "invalid_ligands", invalid: [1] });
        assert.equal(
          (await store.listBatchChildren({ orgId: ORG, batchId: accepted.id, limit: 10 })).length,
          0,
        );
      });

      it("rewrites artifacts of finished batches first, and of running ones less often the bigger they are", async () => {
        const small = await newBatch(2);
        const big = await newBatch(300);
        await claim(small.model, 1, 1_000_000);
        const [bigJob] = (await claim(big.model, 1, 1_000_000))!.jobs;
        const refresh = { minMs: 1_000, perChildMs: 10 };
        const ids = async (now: number) =>
          (await store.batchesDueForArtifacts(now, refresh, 1_000))
            .map((b) => b.id)
            .filter((id) => id === small.batch.id || id === big.batch.id);
        assert.deepEqual(await ids(1_000_000), [], "just started: nothing to show yet");
        assert.deepEqual(await ids(1_001_500), [small.batch.id], "300 children wait 3 s, 2 children 1 s");
        assert.deepEqual(await ids(1_003_500), [small.batch.id, big.batch.id]);
        await store.markArtifactsWritten(small.batch.id, 1_003_500);
        await store.markArtifactsWritten(big.batch.id, 1_003_500);
        assert.deepEqual(await ids(1_005_000), [small.batch.id], "spaced from the last write");
        assert.deepEqual(await ids(1_007_000), [small.batch.id, big.batch.id]);
        await store.requestBatchCancel(ORG, big.batch.id, 1_007_100);
        await store.finish(lease(bigJob!), { status: "cancelled" }, 1_007_100);
        assert.equal((await store.getBatch(ORG, big.batch.id))?.status, "cancelled");
        assert.equal((await ids(1_007_200))[0], big.batch.id, "a batch that ended since comes first");
        await store.requestBatchCancel(ORG, small.batch.id, 1_008_000);
      });

      it("counts the children each batch may start now, capped by max_concurrent", async () => {
        const wide = await newBatch(7, { maxConcurrent: 100, invalid: 2 });
        const narrow = await newBatch(10, { maxConcurrent: 3 });
        await claim(narrow.model, 2);
        const startable = async () =>
          Object.fromEntries(
            (await store.readyWork(2_000)).batches
              .filter((b) => b.model === wide.model || b.model === narrow.model)
              .map((b) => [b.model === wide.model ? "wide" : "narrow", b.startable]),
          );
        assert.deepEqual(
          await startable(),
          { wide: 5, narrow: 1 },
          "invalid rows never start; 2 of 3 slots taken",
        );
        await claim(narrow.model, 1);
        assert.deepEqual(await startable(), { wide: 5 }, "a batch at its cap waits");
        await store.requestBatchCancel(ORG, wide.batch.id, 3_000);
        await store.requestBatchCancel(ORG, narrow.batch.id, 3_000);
      });

      it("keeps children out of the generic claim and lists them page by page", async () => {
        const { batch } = await newBatch(5);
        const generic = await store.claim({ owner: "w", limit: 100, leaseMs: 1_000, now: 2_000 });
        assert.ok(generic.every((j) => j.batchId === null));
        const top = await store.topQueued(2_000, false);
        assert.equal(top.batch?.priority, 0);
        const first = await store.listBatchChildren({ orgId: ORG, batchId: batch.id, limit: 3 });
        const rest = await store.listBatchChildren({
          orgId: ORG,
          batchId: batch.id,
          after: first.at(-1)!.id,
          limit: 3,
        });
        assert.equal(first.length + rest.length, 5);
        assert.equal(new Set([...first, ...rest].map((j) => j.id)).size, 5);
        assert.equal(
          (await store.listBatchChildren({ orgId: OTHER_ORG, batchId: batch.id, limit: 10 })).length,
          0,
        );
        await store.requestBatchCancel(ORG, batch.id, 3_000);
      });
    });

    it("keeps each org's sealed cloud credentials apart; storing again replaces, deleting says whether it did", async () => {
      const sealed = (orgId: string, provider: string, hint: string, updatedAt: number) => ({
        orgId,
        provider,
        ciphertext: `ct-${hint}`,
        iv: "iv",
        tag: "tag",
        keyHint: hint,
        updatedAt,
      });
      await store.putCredential(sealed(ORG, "vastai", "aaaa", 1_000));
      await store.putCredential(sealed(ORG, "runpod", "bbbb", 1_000));
      await store.putCredential(sealed(OTHER_ORG, "vastai", "zzzz", 1_000));
      await store.putCredential(sealed(ORG, "vastai", "cccc", 2_000));
      assert.deepEqual(
        (await store.listCredentials(ORG)).map((c) => [c.provider, c.keyHint, c.ciphertext, c.updatedAt]),
        [
          ["runpod", "bbbb", "ct-bbbb", 1_000],
          ["vastai", "cccc", "ct-cccc", 2_000],
        ],
      );
      assert.equal(await store.deleteCredential(ORG, "vastai"), true);
      assert.equal(await store.deleteCredential(ORG, "vastai"), false);
      assert.deepEqual(
        (await store.listCredentials(OTHER_ORG)).map((c) => c.keyHint),
        ["zzzz"],
        "another org's credential is untouched",
      );
      await store.deleteCredential(ORG, "runpod");
      await store.deleteCredential(OTHER_ORG, "vastai");
    });

    it("keeps market snapshots per org, oldest first, and drops those past the history's reach", async () => {
      const point = (takenAt: number, gpu: string, spot: boolean, min: number) => ({
        takenAt,
        gpu,
        spot,
        prices: { offers: 3, min, median: min + 0.1, p90: min + 0.2 },
      });
      await store.insertMarketPoints(
        ORG,
        [point(1_000, "RTX4090", false, 0.34), point(1_000, "RTX4090", true, 0.2)],
        0,
      );
      await store.insertMarketPoints(ORG, [point(2_000, "RTX4090", false, 0.31)], 0);
      await store.insertMarketPoints(OTHER_ORG, [point(2_000, "H100", false, 2.1)], 0);
      assert.deepEqual(
        (await store.listMarketPoints(ORG, 0)).map((p) => [
          p.takenAt,
          p.gpu,
          p.spot,
          p.prices.min,
          p.prices.p90,
        ]),
        [
          [1_000, "RTX4090", false, 0.34, 0.54],
          [1_000, "RTX4090", true, 0.2, 0.4],
          [2_000, "RTX4090", false, 0.31, 0.51],
        ],
        "another org's snapshots stay apart",
      );
      assert.equal((await store.listMarketPoints(ORG, 1_500)).length, 1);
      await store.insertMarketPoints(ORG, [point(3_000, "RTX4090", false, 0.3)], 1_500);
      assert.deepEqual(
        (await store.listMarketPoints(ORG, 0)).map((p) => p.takenAt),
        [2_000, 3_000],
        "snapshots before keepSince are dropped",
      );
      assert.equal((await store.listMarketPoints(OTHER_ORG, 0)).length, 1);
    });

    it("runs each loop's pass on one process per interval, and on PostgreSQL never two passes at once", async () => {
      const stores = [store, fixture.open(), fixture.open()];
      let passes = 0;
      const wins = await Promise.all(
        stores.map((s) =>
          s.runLoop("provision", 1000, 5_000, async () => {
            passes++;
          }),
        ),
      );
      assert.deepEqual([wins.filter(Boolean).length, passes], [1, 1]);
      assert.equal(
        await store.runLoop("provision", 1000, 5_500, async () => assert.fail("not its turn")),
        false,
      );
      // A pass that outlasts its interval: the next turn waits for it where replicas share a database.
      let endPass!: () => void;
      let started!: () => void;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      const long = store.runLoop("provision", 1000, 6_000, async () => {
        started();
        await new Promise<void>((resolve) => {
          endPass = resolve;
        });
      });
      await running;
      const overlapped = await stores[1]!.runLoop("provision", 1000, 7_500, async () => undefined);
      assert.equal(overlapped, !store.capabilities.skipLocked, "a second pass while the first runs");
      endPass();
      assert.equal(await long, true);
      // A failed pass still took its turn, and its error reaches the caller.
      await assert.rejects(
        stores[2]!.runLoop("provision", 1000, 9_000, async () => {
          throw new Error("pass failed");
        }),
        /pass failed/,
      );
      assert.equal(await store.runLoop("provision", 1000, 9_500, async () => undefined), false);
    });
  });
}
