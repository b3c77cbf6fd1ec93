import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LocalProvider } from "../../src/providers/local/local-provider.ts";
import { runOfferSourceConformance } from "./offer-conformance.ts";

const local = (gpus: { index: number; name: string; memoryMiB: number }[]) =>
  new LocalProvider({ agentCommand: ["true"], maxInstances: 1, gpus, workRoot: "/nonexistent" });

runOfferSourceConformance("local", async () => ({ source: local([]), close: async () => {} }));

describe("LocalProvider offers", () => {
  it("offers this machine at no cost: one CPU offer without GPUs", async () => {
    const [offer, ...rest] = await local([]).offers({});
    assert.equal(rest.length, 0);
    assert.equal(offer?.gpu, "CPU");
    assert.equal(offer?.gpuCount, 0);
    assert.equal(offer?.pricePerHour, 0);
    assert.ok((offer?.vcpus ?? 0) >= 1);
  });

  it("offers one machine per GPU type, named as Hangar names them", async () => {
    const offers = await local([
      { index: 0, name: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564 },
      { index: 1, name: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564 },
      { index: 2, name: "NVIDIA H200", memoryMiB: 143_771 },
    ]).offers({});
    assert.deepEqual(
      offers.map((o) => [o.gpu, o.gpuCount, o.gpuMemoryGb]),
      [
        ["RTX4090", 2, 24],
        ["H200", 1, 140],
      ],
    );
  });
});
