import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OfferBook } from "../../src/app/offers.ts";
import {
  canonicalGpu,
  cheapestFirst,
  marketSummary,
  matchesQuery,
  type Offer,
} from "../../src/domain/offers.ts";
import type { OfferSource } from "../../src/providers/provider.ts";

const offer = (overrides: Partial<Offer>): Offer => ({
  provider: "p",
  id: "o",
  gpu: "RTX4090",
  gpuCount: 1,
  gpuMemoryGb: 24,
  vcpus: 8,
  memoryGb: 32,
  region: null,
  spot: false,
  pricePerHour: 1,
  reliability: null,
  fetchedAt: 0,
  ...overrides,
});

describe("canonicalGpu", () => {
  it("names one GPU one way whatever the provider calls it", () => {
    for (const name of ["NVIDIA GeForce RTX 4090", "RTX 4090", "rtx4090", "RTX-4090"]) {
      assert.equal(canonicalGpu(name, 24), "RTX4090", name);
    }
    assert.equal(canonicalGpu("NVIDIA H100 80GB HBM3", 80), "H100");
    assert.equal(canonicalGpu("H100 NVL", 94), "H100");
    assert.equal(canonicalGpu("A10g", 24), "A10G", "A10G is not taken for A10");
    assert.equal(canonicalGpu("A10", 24), "A10");
    assert.equal(canonicalGpu("Tesla T4", 16), "T4");
    assert.equal(canonicalGpu("L40", 48), "L40", "an L40 is not an L4");
    assert.equal(canonicalGpu("L40S", 48), "L40S");
  });

  it("tells the A100s apart by memory and keeps unknown names as given", () => {
    assert.equal(canonicalGpu("A100 SXM4", 80), "A100-80GB");
    assert.equal(canonicalGpu("A100 PCIE", 40), "A100-40GB");
    assert.equal(canonicalGpu("Radeon Instinct MI300X", 192), "Radeon Instinct MI300X");
  });
});

describe("matchesQuery and cheapestFirst", () => {
  it("filters by provider, GPU (any spelling), count, memory, price and kind", () => {
    const o = offer({ provider: "vastai", gpuCount: 2, pricePerHour: 0.6, spot: true });
    assert.ok(
      matchesQuery(o, { gpu: "RTX 4090", minGpus: 2, minGpuMemoryGb: 24, maxPricePerHour: 0.6, spot: true }),
    );
    assert.ok(!matchesQuery(o, { provider: "runpod" }));
    assert.ok(!matchesQuery(o, { gpu: "H100" }));
    assert.ok(!matchesQuery(o, { minGpus: 3 }));
    assert.ok(!matchesQuery(o, { minGpuMemoryGb: 25 }));
    assert.ok(!matchesQuery(o, { maxPricePerHour: 0.59 }));
    assert.ok(!matchesQuery(o, { spot: false }));
    assert.ok(matchesQuery(offer({ gpu: "A100-80GB", gpuMemoryGb: 80 }), { gpu: "A100" }));
  });

  it("puts the cheapest first, then the more reliable, then the fresher", () => {
    const offers = [
      offer({ id: "dear", pricePerHour: 2 }),
      offer({ id: "old", pricePerHour: 1, reliability: 0.9, fetchedAt: 1 }),
      offer({ id: "flaky", pricePerHour: 1, reliability: 0.5, fetchedAt: 9 }),
      offer({ id: "fresh", pricePerHour: 1, reliability: 0.9, fetchedAt: 5 }),
    ];
    assert.deepEqual(
      offers.sort(cheapestFirst).map((o) => o.id),
      ["fresh", "old", "flaky", "dear"],
    );
  });
});

describe("marketSummary", () => {
  it("gives min, median and p90 per GPU-hour, on-demand and spot apart, skipping CPU offers", () => {
    const prices = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const rows = marketSummary([
      ...prices.map((p, i) =>
        offer({ provider: i % 2 ? "runpod" : "vastai", pricePerHour: p * 2, gpuCount: 2 }),
      ),
      offer({ spot: true, pricePerHour: 0.5 }),
      offer({ gpu: "CPU", gpuCount: 0, gpuMemoryGb: 0, pricePerHour: 0 }),
    ]);
    assert.deepEqual(rows, [
      {
        gpu: "RTX4090",
        onDemand: { offers: 10, min: 1, median: 5, p90: 9 },
        spot: { offers: 1, min: 0.5, median: 0.5, p90: 0.5 },
        providers: ["p", "runpod", "vastai"],
      },
    ]);
  });
});

describe("OfferBook", () => {
  const source = (name: string, offers: () => Promise<Offer[]>): OfferSource & { calls: number } => {
    const counted = {
      name,
      calls: 0,
      offers: async () => {
        counted.calls++;
        return offers();
      },
    };
    return counted;
  };

  it("merges providers cheapest first and reports a failing one without failing the search", async () => {
    const a = source("a", async () => [offer({ provider: "a", id: "a1", pricePerHour: 3 })]);
    const b = source("b", async () => [offer({ provider: "b", id: "b1", pricePerHour: 1 })]);
    const broken = source("broken", async () => {
      throw new Error("broken: HTTP 503 after 4 attempts");
    });
    const book = new OfferBook([a, b, broken], { ttlMs: 1_000, now: () => 0 });
    const { offers, failures } = await book.search({});
    assert.deepEqual(
      offers.map((o) => o.id),
      ["b1", "a1"],
    );
    assert.deepEqual(failures, [{ provider: "broken", message: "broken: HTTP 503 after 4 attempts" }]);
  });

  it("reuses an answer within the TTL, filters cached answers again, and never caches a failure", async () => {
    let now = 0;
    let fail = true;
    const a = source("a", async () => [
      offer({ provider: "a", id: "cheap", pricePerHour: 1 }),
      offer({ provider: "a", id: "dear", pricePerHour: 5 }),
    ]);
    const flaky = source("flaky", async () => {
      if (fail) throw new Error("down");
      return [];
    });
    const book = new OfferBook([a, flaky], { ttlMs: 30_000, now: () => now });
    await book.search({});
    const capped = await book.search({ maxPricePerHour: 2 });
    assert.deepEqual(
      capped.offers.map((o) => o.id),
      ["cheap"],
      "the price cap is applied to the cached answer",
    );
    assert.equal(a.calls, 1);
    fail = false;
    assert.deepEqual((await book.search({})).failures, []);
    assert.equal(flaky.calls, 3, "a failure is asked again at once");
    now = 30_000;
    await book.search({});
    assert.equal(a.calls, 2, "asked again after the TTL");
  });
});
