import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Offer } from "../../src/domain/offers.ts";
import {
  candidateOffers,
  capByPools,
  launchNeeds,
  offersToStart,
  parseWarmPools,
  placementOf,
  settleRace,
  warmPoolNeeds,
} from "../../src/domain/provisioning.ts";

const offer = (provider: string, gpu: string, gpuCount: number, price: number, spot = false): Offer => ({
  provider,
  id: `${provider}-${gpu}-${gpuCount}-${price}${spot ? "-spot" : ""}`,
  gpu,
  gpuCount,
  gpuMemoryGb: 24,
  vcpus: null,
  memoryGb: null,
  region: null,
  spot,
  pricePerHour: price,
  reliability: null,
  fetchedAt: 0,
});

describe("launch needs per GPU shape", () => {
  it("launches for the jobs that no booting or idle instance of that shape will take", () => {
    assert.deepEqual(
      launchNeeds(
        [{ type: "RTX4090", count: 1, strategy: null, jobs: 3 }],
        [
          { gpuType: "RTX4090", gpuCount: 1, busy: false },
          { gpuType: "RTX4090", gpuCount: 1, busy: true },
          { gpuType: "H100", gpuCount: 8, busy: false },
        ],
      ),
      [{ type: "RTX4090", count: 1, strategy: null, launches: 2 }],
    );
  });

  it("counts a bigger machine for a smaller ask, but one machine for one shape only", () => {
    assert.deepEqual(
      launchNeeds(
        [
          { type: "H100", count: 1, strategy: null, jobs: 1 },
          { type: "H100", count: 4, strategy: "race", jobs: 1 },
        ],
        [{ gpuType: "H100", gpuCount: 8, busy: false }],
      ),
      [{ type: "H100", count: 1, strategy: null, launches: 1 }],
      "the 8-GPU machine serves the 4-GPU job; the 1-GPU job needs its own",
    );
    assert.deepEqual(
      launchNeeds(
        [{ type: "H100", count: 2, strategy: null, jobs: 1 }],
        [{ gpuType: "H100", gpuCount: 1, busy: false }],
      ),
      [{ type: "H100", count: 2, strategy: null, launches: 1 }],
    );
  });
});

describe("candidate offers", () => {
  const offers = [
    offer("vastai", "RTX4090", 1, 0.31),
    offer("runpod", "RTX4090", 1, 0.35),
    offer("runpod", "RTX4090", 1, 0.2, true),
    offer("local", "RTX4090", 1, 0),
    offer("vastai", "RTX4090", 2, 0.58),
    offer("vastai", "H100", 1, 2),
    { ...offer("vastai", "RTX4090", 1, 0.25), machineId: "m-bad" },
  ];
  const launchable = (provider: string) => provider !== "local";

  it("keeps launchable offers of the type with enough GPUs, on-demand, cheapest first, skipping bad hosts", () => {
    const picked = candidateOffers(
      offers,
      { type: "RTX4090", count: 1 },
      {
        launchable,
        spot: false,
        skipped: (o) => o.machineId === "m-bad",
      },
    );
    assert.deepEqual(
      picked.map((o) => [o.provider, o.gpuCount, o.pricePerHour]),
      [
        ["vastai", 1, 0.31],
        ["runpod", 1, 0.35],
        ["vastai", 2, 0.58],
      ],
    );
  });

  it("takes spot offers only when spot is wanted", () => {
    const picked = candidateOffers(offers, { type: "RTX4090", count: 1 }, { launchable, spot: true });
    assert.deepEqual(
      picked.map((o) => o.id),
      ["runpod-RTX4090-1-0.2-spot"],
    );
  });
});

describe("placement of an instance", () => {
  const gpus = (n: number) =>
    Array.from({ length: n }, (_, index) => ({ index, name: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564 }));

  it("a cloud instance takes only runs asking for its GPU type, up to its count", () => {
    assert.deepEqual(placementOf({ gpus: gpus(2) }, { onThisHost: false, cloudsLaunchGpus: true }), {
      cpuJobs: false,
      gpu: { type: "RTX4090", count: 2 },
      anyGpu: false,
    });
  });

  it("this host takes CPU work, its own GPUs' runs, and every GPU run while no cloud launches GPUs", () => {
    assert.deepEqual(placementOf({ gpus: [] }, { onThisHost: true, cloudsLaunchGpus: false }), {
      cpuJobs: true,
      gpu: null,
      anyGpu: true,
    });
    assert.deepEqual(placementOf({ gpus: gpus(1) }, { onThisHost: true, cloudsLaunchGpus: true }), {
      cpuJobs: true,
      gpu: { type: "RTX4090", count: 1 },
      anyGpu: false,
    });
  });
});

describe("provisioning strategies", () => {
  const offers = [
    { ...offer("vastai", "RTX4090", 1, 0.25), machineId: "m1" },
    { ...offer("vastai", "RTX4090", 1, 0.26), id: "other-ask-same-host", machineId: "m1" },
    { ...offer("vastai", "RTX4090", 1, 0.3), machineId: "m2" },
    offer("runpod", "RTX4090", 1, 0.34),
    offer("sim", "RTX4090", 1, 0.4),
  ];

  it("Coldstart and RoundRobin start one offer; Race starts `width` on different hosts", () => {
    assert.deepEqual(offersToStart(offers, "coldstart", 3), [offers[0]]);
    assert.deepEqual(offersToStart(offers, "roundrobin", 3), [offers[0]]);
    assert.deepEqual(
      offersToStart(offers, "race", 3).map((o) => [o.provider, o.pricePerHour]),
      [
        ["vastai", 0.25],
        ["vastai", 0.3],
        ["runpod", 0.34],
      ],
      "the second ask on host m1 is passed over",
    );
  });

  it("a race is won by the first member to register; the others still up and idle are ended, their cost is waste", () => {
    const member = (
      instanceId: string,
      registeredAt: number | null,
      state: "up" | "busy" | "ended" = "up",
    ) => ({
      instanceId,
      registeredAt,
      busy: state === "busy",
      ended: state === "ended",
      launchedAt: 0,
      pricePerHour: 0.36,
    });
    assert.equal(
      settleRace([member("a", null), member("b", null)], 60_000),
      null,
      "nobody has registered yet",
    );
    const settled = settleRace(
      [member("a", null), member("b", 50_000), member("c", null, "ended"), member("d", 40_000)],
      600_000,
    );
    assert.equal(settled?.winner, "d", "the earliest to register");
    assert.deepEqual(settled?.losers, ["a", "b"], "c had already ended");
    assert.ok(
      Math.abs(settled!.wasteUsd - 0.12) < 1e-9,
      `2 × 10 min at $0.36/h is $0.12, got ${settled?.wasteUsd}`,
    );
    const working = settleRace([member("a", 10_000), member("b", 20_000, "busy")], 600_000);
    assert.equal(working?.winner, "b", "the one that took the work wins, though it registered second");
    assert.deepEqual(working?.losers, ["a"], "the idle first one is ended");
    const both = settleRace(
      [member("a", 10_000, "busy"), member("b", 20_000, "busy"), member("c", 5_000)],
      600_000,
    );
    assert.deepEqual([both?.winner, both?.losers], ["a", ["c"]], "a member that already took a job keeps it");
  });

  it("warm pools are read as TYPE:MIN[:MAX[:IDLE_S]] and keep their minimum up", () => {
    assert.deepEqual(parseWarmPools("RTX4090:2, H100:0:4, A100-80GB:1:2:300"), [
      { type: "RTX4090", min: 2, max: null, idleS: null },
      { type: "H100", min: 0, max: 4, idleS: null },
      { type: "A100-80GB", min: 1, max: 2, idleS: 300 },
    ]);
    assert.deepEqual(parseWarmPools(""), []);
    assert.throws(() => parseWarmPools("RTX4090"), /"RTX4090" is not TYPE:MIN\[:MAX\[:IDLE_S\]\]/);
    assert.throws(() => parseWarmPools("RTX4090:3:2"), /MAX ≥ MIN/);
    assert.throws(() => parseWarmPools("RTX4090:0:0"), /≥ 1/);
    assert.deepEqual(
      warmPoolNeeds(parseWarmPools("RTX4090:2,H100:0"), [{ gpuType: "RTX4090", gpuCount: 1, busy: true }]),
      [{ type: "RTX4090", count: 1, strategy: null, launches: 1 }],
      "a busy member still counts as up; a pool of 0 scales to zero",
    );
  });

  it("no pool goes past its maximum, booting instances included; types without a cap are untouched", () => {
    const pools = parseWarmPools("RTX4090:0:3");
    const up = [
      { gpuType: "RTX4090", gpuCount: 1, busy: true },
      { gpuType: "RTX4090", gpuCount: 1, busy: false },
    ];
    assert.deepEqual(
      capByPools(
        [
          { type: "RTX4090", count: 1, strategy: null, launches: 2 },
          { type: "RTX4090", count: 1, strategy: "race", launches: 1 },
          { type: "H100", count: 1, strategy: null, launches: 5 },
        ],
        pools,
        up,
      ),
      [
        { type: "RTX4090", count: 1, strategy: null, launches: 1 },
        { type: "H100", count: 1, strategy: null, launches: 5 },
      ],
      "one more RTX 4090 fits under the cap of 3; the raced need gets none",
    );
  });
});
