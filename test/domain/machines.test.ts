import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type LaunchAttempt, machineHistory, outcomeOf } from "../../src/domain/machines.ts";

const HOUR = 3_600_000;
const POLICY = { minAttempts: 3, minSuccessRate: 0.3, skipMs: 24 * HOUR };

let serial = 0;
const attempt = (machineId: string | null, overrides: Partial<LaunchAttempt>): LaunchAttempt => ({
  instanceId: `inst_${serial++}`,
  provider: "vastai",
  machineId,
  pricePerHour: 0.3,
  launchedAt: 0,
  readyAt: null,
  endedAt: null,
  error: null,
  ...overrides,
});
const ready = (machineId: string, launchedAt: number, seconds: number) =>
  attempt(machineId, { launchedAt, readyAt: launchedAt + seconds * 1000 });
const failed = (machineId: string, launchedAt: number, error = "OCI runtime create failed") =>
  attempt(machineId, { launchedAt, endedAt: launchedAt + 60_000, error });

describe("machine history", () => {
  it("tells ready, failed and pending attempts apart", () => {
    assert.equal(outcomeOf(ready("m", 0, 5)), "ready");
    assert.equal(outcomeOf(failed("m", 0)), "failed");
    assert.equal(outcomeOf(attempt("m", {})), "pending");
  });

  it("skips a machine below 30% over 3 ended attempts for 24 h after its last failure", () => {
    const attempts = [
      failed("bad", 0),
      failed("bad", HOUR),
      ready("bad", 2 * HOUR, 40),
      failed("bad", 3 * HOUR),
    ];
    const lastFailureEnd = 3 * HOUR + 60_000;
    const [record] = machineHistory(attempts, POLICY, 4 * HOUR);
    assert.equal(record?.successRate, 0.25);
    assert.equal(record?.skippedUntil, lastFailureEnd + 24 * HOUR);
    assert.equal(record?.lastError, "OCI runtime create failed");
    assert.equal(
      machineHistory(attempts, POLICY, lastFailureEnd + 24 * HOUR)[0]?.skippedUntil,
      null,
      "tried again after",
    );
  });

  it("does not judge a machine on fewer attempts than the policy asks, nor at the threshold", () => {
    assert.equal(machineHistory([failed("new", 0), failed("new", 1)], POLICY, 2)[0]?.skippedUntil, null);
    const exactly30 = [
      ...Array.from({ length: 3 }, (_, i) => ready("edge", i, 10)),
      ...Array.from({ length: 7 }, (_, i) => failed("edge", 10 + i)),
    ];
    assert.equal(machineHistory(exactly30, POLICY, 100)[0]?.successRate, 0.3);
    assert.equal(
      machineHistory(exactly30, POLICY, 100)[0]?.skippedUntil,
      null,
      "below 30% skips; 30% does not",
    );
    const pendingOnly = machineHistory([attempt("p", {}), attempt("p", {}), attempt("p", {})], POLICY, 1)[0];
    assert.deepEqual([pendingOnly?.successRate, pendingOnly?.skippedUntil], [null, null]);
  });

  it("groups per provider and machine, worst first, with the median time to ready; unplaced attempts left out", () => {
    const machines = machineHistory(
      [
        ready("fast", 0, 10),
        ready("fast", 1, 30),
        ready("fast", 2, 20),
        failed("slow", 3),
        ready("slow", 4, 300),
        attempt(null, { endedAt: 5, error: "no capacity" }),
        { ...ready("fast", 6, 15), provider: "runpod" },
      ],
      POLICY,
      10,
    );
    assert.deepEqual(
      machines.map((m) => [m.provider, m.machineId, m.attempts, m.successRate, m.medianTimeToReadyMs]),
      [
        ["vastai", "slow", 2, 0.5, 300_000],
        ["runpod", "fast", 1, 1, 15_000],
        ["vastai", "fast", 3, 1, 20_000],
      ],
    );
  });
});
