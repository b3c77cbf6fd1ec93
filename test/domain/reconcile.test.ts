import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { InstanceState } from "../../src/domain/instance.ts";
import { strays, TerminationTracker } from "../../src/domain/reconcile.ts";

const listed = (id: string, labels: Record<string, string>) => ({ providerInstanceId: id, labels });

describe("strays", () => {
  it("are this deployment's instances that the database does not know or has ended", () => {
    const states = new Map<string, InstanceState>([
      ["inst_live", "busy"],
      ["inst_ended", "terminated"],
      ["inst_booting", "provisioning"],
    ]);
    const found = strays(
      [
        listed("p1", { hangar_deployment: "d1", hangar_instance: "inst_live" }),
        listed("p2", { hangar_deployment: "d1", hangar_instance: "inst_ended" }),
        listed("p3", { hangar_deployment: "d1", hangar_instance: "inst_forgotten" }),
        listed("p4", { hangar_deployment: "d1" }),
        listed("p5", { hangar_deployment: "d2", hangar_instance: "inst_other" }),
        listed("p6", { hangar_deployment: "d1", hangar_instance: "inst_booting" }),
      ],
      "d1",
      (id) => states.get(id),
    );
    assert.deepEqual(found, [
      { providerInstanceId: "p2", why: "inst_ended was ended but is still running" },
      { providerInstanceId: "p3", why: "unknown to the database (inst_forgotten)" },
      { providerInstanceId: "p4", why: "unknown to the database (no instance label)" },
    ]);
  });
});

describe("TerminationTracker", () => {
  it("retries with a doubling pause and alerts from the second failure until the instance is gone", () => {
    const tracker = new TerminationTracker(1_000, 4_000);
    assert.equal(tracker.shouldRequest("p", 0), true);
    tracker.requested("p");
    // Next pass: still listed after the request.
    assert.equal(tracker.shouldRequest("p", 1_000), false, "paused 1 s after the first failure");
    assert.deepEqual(tracker.alerts(), []);
    assert.equal(tracker.shouldRequest("p", 2_000), true);
    tracker.failed("p", "HTTP 500", 2_000);
    assert.deepEqual(tracker.alerts(), [
      { providerInstanceId: "p", failures: 2, firstFailedAt: 1_000, lastError: "HTTP 500" },
    ]);
    assert.equal(tracker.shouldRequest("p", 3_999), false, "paused 2 s after the second");
    assert.equal(tracker.shouldRequest("p", 4_000), true);
    tracker.failed("p", "HTTP 500", 4_000);
    assert.equal(tracker.shouldRequest("p", 7_999), false, "the pause is capped at 4 s");
    assert.equal(tracker.shouldRequest("p", 8_000), true);
    tracker.keepOnly(new Set());
    assert.deepEqual(tracker.alerts(), [], "gone from the provider's list: confirmed");
  });
});
