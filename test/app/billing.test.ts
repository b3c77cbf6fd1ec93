import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, it } from "node:test";
import { billingPass, holdCredits } from "../../src/app/billing.ts";
import { type AppContext, createEvents } from "../../src/app/context.ts";
import { loadConfig } from "../../src/config.ts";
import type { Principal } from "../../src/domain/access.ts";
import type { HangarError } from "../../src/domain/errors.ts";
import { newId } from "../../src/domain/ids.ts";
import { grantEntry } from "../../src/domain/ledger.ts";
import { createLogger } from "../../src/server/logging.ts";
import type { NewJob, Store } from "../../src/store/store.ts";
import { DIALECTS, notebookJob, type StoreFixture } from "../helpers/stores.ts";

const PRICE_PER_MS = 3_600_000;

for (const dialect of DIALECTS) {
  describe(`the billing loop: ${dialect.name}`, () => {
    let fixture: StoreFixture;
    let store: Store;
    let clock = 1_000_000;
    let ctx: AppContext;

    const newOrg = async () => {
      const id = newId("org");
      await store.accounts.ensureOrg(id, id, 0);
      return id;
    };
    const principal = (orgId: string): Principal => ({
      userId: "user_x",
      orgId,
      role: "member",
      scopes: ["read", "write"],
      platformAdmin: false,
      keyId: null,
    });
    const job = (orgId: string, overrides: Partial<NewJob> = {}) =>
      notebookJob(orgId, { maxAttempts: 1, runAt: 0, createdAt: 0, userId: "user_x", ...overrides });
    const claimPriced = async (id: string) => {
      const claimed = await store.claim({
        owner: `inst_${id}`,
        limit: 1,
        leaseMs: 3_600_000,
        now: clock,
        compute: {
          instance_id: `inst_${id}`,
          provider: "local",
          gpus: [],
          price_micro_per_hour: PRICE_PER_MS,
          share: 1,
        },
      });
      assert.equal(claimed[0]?.id, id);
      return claimed[0]!;
    };

    before(async () => {
      fixture = await dialect.fixture();
      store = fixture.open();
      await store.migrate();
      const config = loadConfig({ HANGAR_DATA_DIR: `/tmp/hangar-billing-test-${process.pid}` }, { port: 0 });
      ctx = {
        config,
        store,
        log: createLogger("silent"),
        events: createEvents(),
        now: () => clock,
        defaultOrgId: "org_default",
      } as AppContext;
    });
    after(() => fixture.cleanup());

    it("settles the hold of ended work, and releases a hold whose work was never stored", async () => {
      const org = await newOrg();
      await store.ledger.post([grantEntry(org, "g", 10_000, null)], clock);
      const run = await store.enqueue(job(org));
      await holdCredits(ctx, principal(org), run.id, {
        amountMicro: 5_000,
        pricePerHourMicro: PRICE_PER_MS,
        basis: "local",
      });
      await holdCredits(ctx, principal(org), "run_never_stored", {
        amountMicro: 1_000,
        pricePerHourMicro: 1,
        basis: "local",
      });
      const claimed = await claimPriced(run.id);
      clock += 1_234;
      await store.finish({ jobId: run.id, leaseToken: claimed.leaseToken! }, { status: "succeeded" }, clock);
      await billingPass(ctx);
      assert.deepEqual(await store.ledger.balances(org), {
        external: -10_000,
        available: 7_766,
        held: 1_000,
        spent: 1_234,
      });
      clock += 61_000;
      await billingPass(ctx);
      assert.deepEqual(await store.ledger.balances(org), {
        external: -10_000,
        available: 8_766,
        held: 0,
        spent: 1_234,
      });
    });

    it("settles work estimated at nothing that still cost something from the available balance", async () => {
      const org = await newOrg();
      await store.ledger.post([grantEntry(org, "g", 10_000, null)], clock);
      const run = await store.enqueue(job(org));
      await holdCredits(ctx, principal(org), run.id, { amountMicro: 0, pricePerHourMicro: 0, basis: "none" });
      const claimed = await claimPriced(run.id);
      clock += 700;
      await store.finish({ jobId: run.id, leaseToken: claimed.leaseToken! }, { status: "succeeded" }, clock);
      await billingPass(ctx);
      assert.deepEqual(await store.ledger.balances(org), {
        external: -10_000,
        available: 9_300,
        held: 0,
        spent: 700,
      });
      const overrun = (await store.ledger.listEntries(org, 10)).find((e) => e.key === `overrun:${run.id}`);
      assert.equal(overrun?.amount, 700);
    });

    it("refuses a hold the balance cannot cover with the figures, and never holds for the deployment's own org", async () => {
      const org = await newOrg();
      await store.ledger.post([grantEntry(org, "g", 500, null)], clock);
      await assert.rejects(
        holdCredits(ctx, principal(org), "run_x", { amountMicro: 501, pricePerHourMicro: 1, basis: "local" }),
        (error: HangarError) =>
          error.status === 402 &&
          error.code === "insufficient_credits" &&
          JSON.stringify(error.details) ===
            JSON.stringify({
              estimate: "0.000501",
              balance: "0.000500",
              shortfall: "0.000001",
              price_per_hour: "0.000001",
            }),
      );
      await store.accounts.ensureOrg("org_default", "default", 0);
      await holdCredits(ctx, principal("org_default"), "run_y", {
        amountMicro: 501,
        pricePerHourMicro: 1,
        basis: "local",
      });
      assert.equal((await store.ledger.balances("org_default")).held, 501);
    });

    it("stops an org's running work, saying why, once its balance and holds no longer cover what it used", async () => {
      const org = await newOrg();
      await store.ledger.post([grantEntry(org, "g", 2_000, null)], clock);
      const run = await store.enqueue(job(org));
      await claimPriced(run.id);
      clock += 1_500;
      await billingPass(ctx);
      assert.equal((await store.getJob(org, run.id))?.cancelRequested, false, "1,500 µ used of 2,000");
      clock += 1_000;
      await billingPass(ctx);
      const stopped = await store.getJob(org, run.id);
      assert.equal(stopped?.cancelRequested, true);
      assert.equal(stopped?.error?.code, "credits_exhausted");
      assert.match(stopped!.error!.message, /credits ran out; outputs produced so far are saved/);
    });

    it("bills an instance's unused time to its org once it ends", async () => {
      const org = await newOrg();
      const run = await store.enqueue(job(org));
      const instance = `inst_${run.id}`;
      await store.insertInstance({
        id: instance,
        orgId: org,
        provider: "local",
        gpus: [],
        bootstrapTokenHash: `b_${run.id}`,
        createdAt: clock,
      });
      await store.recordLaunch(instance, { providerInstanceId: "p", machineId: "m", pricePerHour: 3.6 });
      clock += 1_000;
      const claimed = await claimPriced(run.id);
      clock += 3_000;
      await store.finish({ jobId: run.id, leaseToken: claimed.leaseToken! }, { status: "succeeded" }, clock);
      clock += 1_000;
      await store.transitionInstance(instance, ["provisioning"], "terminated", clock);
      await billingPass(ctx);
      await billingPass(ctx);
      const entries = await store.ledger.listEntries(org, 100);
      const idle = entries.filter((e) => e.key === `idle:${instance}`);
      assert.deepEqual(
        idle.map((e) => e.amount),
        [2_000],
        "5 s of instance, 3 s used by the run",
      );
      assert.equal(
        (await store.ledger.balances(org)).spent,
        5_000,
        "the whole instance time, to the micro-unit",
      );
    });

    it("raises each budget threshold once, posts it to the webhook, and stops work at 100% when asked", async () => {
      const org = await newOrg();
      const received: unknown[] = [];
      const hook = createServer((request, response) => {
        let body = "";
        request.on("data", (chunk) => {
          body += chunk;
        });
        request.on("end", () => {
          received.push(JSON.parse(body));
          response.end();
        });
      });
      await new Promise<void>((resolve) => hook.listen(0, "127.0.0.1", resolve));
      const port = (hook.address() as { port: number }).port;
      try {
        await store.ledger.post([grantEntry(org, "g", 1_000_000, null)], clock);
        await store.ledger.putBudget(
          {
            orgId: org,
            userId: null,
            monthlyLimitMicro: 2_000,
            action: "stop",
            webhookUrl: `http://127.0.0.1:${port}/hook`,
          },
          clock,
        );
        const first = await store.enqueue(job(org));
        const claimed = await claimPriced(first.id);
        clock += 1_700;
        await store.finish(
          { jobId: first.id, leaseToken: claimed.leaseToken! },
          { status: "succeeded" },
          clock,
        );
        const second = await store.enqueue(job(org));
        await claimPriced(second.id);
        await billingPass(ctx);
        await billingPass(ctx);
        assert.deepEqual(
          (await store.ledger.listBudgetEvents(org, 10)).map((e) => e.threshold).sort(),
          [50, 80],
        );
        await holdCredits(ctx, principal(org), "run_ok", {
          amountMicro: 0,
          pricePerHourMicro: 0,
          basis: "local",
        });
        clock += 400;
        const third = await store.enqueue(job(org));
        const ended = await store.getJob(org, second.id);
        await store.finish(
          { jobId: second.id, leaseToken: ended!.leaseToken! },
          { status: "succeeded" },
          clock,
        );
        await billingPass(ctx);
        assert.deepEqual(
          (await store.ledger.listBudgetEvents(org, 10)).map((e) => e.threshold).sort(),
          [100, 50, 80],
        );
        assert.equal(
          (await store.getJob(org, third.id))?.error?.code,
          "budget_exhausted",
          "queued work stopped",
        );
        await assert.rejects(
          holdCredits(ctx, principal(org), "run_late", {
            amountMicro: 0,
            pricePerHourMicro: 0,
            basis: "local",
          }),
          (error: HangarError) => error.status === 402 && error.code === "budget_exhausted",
        );
        for (let i = 0; i < 50 && received.length < 3; i++)
          await new Promise((resolve) => setTimeout(resolve, 20));
        assert.deepEqual(
          (received as { threshold_percent: number; type: string; budget: string }[])
            .map((r) => [r.type, r.threshold_percent, r.budget])
            .sort((a, b) => Number(a[1]) - Number(b[1])),
          [
            ["budget.threshold", 50, "0.002000"],
            ["budget.threshold", 80, "0.002000"],
            ["budget.threshold", 100, "0.002000"],
          ],
        );
      } finally {
        hook.close();
      }
    });
  });
}
