import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canAssignRole, denial, grantableScopes, type Principal } from "../../src/domain/access.ts";
import { monthOf, reachedThresholds } from "../../src/domain/budget.ts";
import type { Job } from "../../src/domain/job.ts";
import { balancesOf, grantEntry, holdEntry, settleEntry } from "../../src/domain/ledger.ts";
import { costOfTime, formatMicro, toMicro, withMarkup } from "../../src/domain/money.ts";
import { RateLimiter } from "../../src/domain/rate-limit.ts";
import { attemptUsage, usageCharge } from "../../src/domain/usage.ts";

const principal = (overrides: Partial<Principal> = {}): Principal => ({
  userId: "user_a",
  orgId: "org_a",
  role: "member",
  scopes: ["read", "write", "admin"],
  platformAdmin: false,
  keyId: "key_a",
  ...overrides,
});

describe("money", () => {
  it("keeps prices as whole micro-units and charges per millisecond, rounding half up once", () => {
    assert.equal(toMicro(0.44), 440_000);
    assert.equal(toMicro(1.39), 1_390_000);
    // 0.44 $/h for 1 s = 0.000122222… → 122 µ; for 1.5 s = 183.33… → 183 µ.
    assert.equal(costOfTime(440_000, 1_000), 122);
    assert.equal(costOfTime(440_000, 1_500), 183);
    assert.equal(costOfTime(3_600_000, 1_000), 1_000);
    // Half a micro-unit rounds up: 1.8 $/h × 1 ms = 0.5 µ.
    assert.equal(costOfTime(1_800_000, 1), 1);
    // Four runs packed on one instance pay a quarter each.
    assert.equal(costOfTime(3_600_000, 60_000, 4), 15_000);
    assert.equal(costOfTime(0, 60_000), 0);
    assert.equal(costOfTime(3_600_000, -5), 0);
  });

  it("adds the markup exactly and prints amounts without float noise", () => {
    assert.equal(withMarkup(440_000, 10), 484_000);
    assert.equal(withMarkup(333_333, 12.5), 375_000);
    assert.equal(withMarkup(440_000, 0), 440_000);
    assert.equal(formatMicro(1_234_567), "1.234567");
    assert.equal(formatMicro(-5), "-0.000005");
    assert.equal(formatMicro(0), "0.000000");
  });
});

describe("ledger", () => {
  it("derives balances from entries; every entry moves money, so the accounts sum to zero", () => {
    const entries = [
      grantEntry("org_a", "g1", 10_000_000, null),
      holdEntry("org_a", "run_1", 3_000_000, "user_a"),
      { from: "held" as const, to: "spent" as const, amount: 1_200_000 },
    ];
    const balances = balancesOf(entries);
    assert.deepEqual(balances, {
      external: -10_000_000,
      available: 7_000_000,
      held: 1_800_000,
      spent: 1_200_000,
    });
    const settled = balancesOf([...entries, settleEntry("org_a", "run_1", balances.held, "user_a")]);
    assert.equal(settled.available, 8_800_000);
    assert.equal(settled.held, 0);
    assert.equal(
      Object.values(settled).reduce((a, b) => a + b, 0),
      0,
    );
  });

  it("settles an overrun from the available balance and marks an exact hold with a release of 0", () => {
    const over = settleEntry("org_a", "batch_1", -250, null);
    assert.deepEqual(
      [over.kind, over.from, over.to, over.amount, over.key],
      ["hold", "available", "held", 250, "overrun:batch_1"],
    );
    const exact = settleEntry("org_a", "run_2", 0, null);
    assert.deepEqual([exact.kind, exact.amount, exact.key], ["release", 0, "release:run_2"]);
  });
});

describe("access", () => {
  it("bounds each role, and a key's scopes bound its user further", () => {
    assert.equal(denial(principal({ role: "viewer" }), "read"), null);
    assert.match(denial(principal({ role: "viewer" }), "write")!, /viewer/);
    assert.equal(denial(principal({ role: "member" }), "write"), null);
    assert.match(denial(principal({ role: "member" }), "manage")!, /member/);
    assert.equal(denial(principal({ role: "admin" }), "manage"), null);
    assert.match(denial(principal({ role: "owner", scopes: ["read"] }), "write")!, /"write" scope/);
    assert.match(denial(principal({ platformAdmin: true, scopes: ["read"] }), "manage")!, /"admin" scope/);
    assert.equal(denial(principal({ platformAdmin: true, role: "viewer" }), "manage"), null);
  });

  it("lets admins hand out roles up to admin, owners any, and keys never more scopes than their maker", () => {
    assert.equal(canAssignRole(principal({ role: "admin" }), "owner"), false);
    assert.equal(canAssignRole(principal({ role: "admin" }), "admin"), true);
    assert.equal(canAssignRole(principal({ role: "owner" }), "owner"), true);
    assert.equal(canAssignRole(principal({ role: "member" }), "viewer"), false);
    assert.deepEqual(grantableScopes(principal({ scopes: ["read", "write"] }), ["read"]), ["read"]);
    assert.equal(grantableScopes(principal({ scopes: ["read", "write"] }), ["admin"]), null);
  });
});

describe("rate limits", () => {
  it("admits a bucket's capacity, then answers when the next token comes; every bucket must admit", () => {
    const limiter = new RateLimiter();
    const limits = [
      { name: "key:k", perMinute: 3 },
      { name: "org:o", perMinute: 100 },
    ];
    for (let i = 0; i < 3; i++) assert.deepEqual(limiter.admit(limits, 0), { admitted: true });
    assert.deepEqual(limiter.admit(limits, 0), { admitted: false, retryAfterS: 20, limit: "key:k" });
    // The refused request took no token from the org's bucket: 3 admitted, 97 left.
    const orgOnly = [{ name: "org:o", perMinute: 100 }];
    let admitted = 0;
    while (limiter.admit(orgOnly, 0).admitted) admitted++;
    assert.equal(admitted, 97);
    assert.deepEqual(limiter.admit(limits.slice(0, 1), 20_000), { admitted: true });
    assert.deepEqual(limiter.admit([{ name: "off", perMinute: 0 }], 0), { admitted: true });
  });
});

describe("budgets", () => {
  it("raises 50, 80 and 100 percent as spending reaches them, per calendar month", () => {
    assert.deepEqual(reachedThresholds(4_999_999, 10_000_000), []);
    assert.deepEqual(reachedThresholds(5_000_000, 10_000_000), [50]);
    assert.deepEqual(reachedThresholds(8_000_000, 10_000_000), [50, 80]);
    assert.deepEqual(reachedThresholds(12_000_000, 10_000_000), [50, 80, 100]);
    assert.deepEqual(monthOf(Date.UTC(2026, 10, 27, 18)), { key: "2026-11", start: Date.UTC(2026, 10, 1) });
  });
});

describe("usage", () => {
  const running = (compute: Job["compute"], overrides: Partial<Job> = {}): Job =>
    ({
      id: "job_1",
      orgId: "org_a",
      kind: "predict",
      batchId: "batch_1",
      spec: { model: "vina" },
      attempts: 2,
      startedAt: 10_000,
      compute,
      userId: "user_a",
      gpuType: null,
      ...overrides,
    }) as Job;

  it("charges an attempt its share of the instance price for the time it ran, against its batch's hold", () => {
    const usage = attemptUsage(
      running({
        instance_id: "inst_1",
        provider: "local",
        gpus: [],
        price_micro_per_hour: 3_600_000,
        share: 4,
      }),
      70_000,
    )!;
    assert.equal(usage.costMicro, 15_000);
    assert.equal(usage.model, "vina");
    const charge = usageCharge(usage)!;
    assert.deepEqual(
      [charge.key, charge.subject, charge.from, charge.to],
      ["charge:job_1:2:10000", "batch_1", "held", "spent"],
    );
  });

  it("records nothing for an attempt that never reached an instance, and no charge when free", () => {
    assert.equal(attemptUsage(running(null, { startedAt: null }), 5_000), null);
    const free = attemptUsage(running({ instance_id: "inst_1", provider: "local", gpus: [] }), 70_000)!;
    assert.equal(free.costMicro, 0);
    assert.equal(usageCharge(free), null);
  });
});
