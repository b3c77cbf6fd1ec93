import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ProviderApiError } from "../../src/providers/http.ts";
import { VastClient, VastProvider } from "../../src/providers/vastai/index.ts";
import { startVastEmulator, type VastEmulator } from "../emulators/vastai.ts";
import { FAST_RETRY, runOfferSourceConformance } from "./offer-conformance.ts";

runOfferSourceConformance("vastai (emulator)", async () => {
  const emulator = await startVastEmulator();
  const client = new VastClient({ apiKey: emulator.apiKey, apiUrl: emulator.url, retry: FAST_RETRY });
  return { source: new VastProvider(client), close: () => emulator.close() };
});

describe("Vast.ai client and offers against the emulator", () => {
  let emulator: VastEmulator;
  let provider: VastProvider;
  before(async () => {
    emulator = await startVastEmulator();
    provider = new VastProvider(
      new VastClient({ apiKey: emulator.apiKey, apiUrl: emulator.url, retry: FAST_RETRY }),
    );
  });
  after(() => emulator.close());

  it("asks Vast to filter and order, and maps its offers (MB to GB, bids as spot)", async () => {
    const offers = await provider.offers({ gpu: "NVIDIA GeForce RTX 4090", minGpuMemoryGb: 20 });
    const search = emulator.searches.at(-1)!;
    assert.deepEqual(search.gpu_name, { in: ["RTX 4090"] });
    assert.deepEqual(search.gpu_ram, { gte: 20 * 1024 });
    assert.deepEqual(search.rented, { eq: false });
    assert.deepEqual(
      offers.map((o) => [o.id, o.gpu, o.gpuCount, o.gpuMemoryGb, o.spot, o.pricePerHour, o.reliability]),
      [
        ["7001", "RTX4090", 1, 24, false, 0.31, 0.995],
        ["7002", "RTX4090", 2, 24, false, 0.58, 0.97],
        ["7001", "RTX4090", 1, 24, true, 0.18, 0.995],
        ["7002", "RTX4090", 2, 24, true, 0.33, 0.97],
      ],
      "the rented machine 7006 is not offered",
    );
    assert.equal(offers[0]?.region, "Norway, NO");
    assert.equal(offers[0]?.memoryGb, 63);
  });

  it("names an A100 by its memory", async () => {
    const [a100] = await provider.offers({ gpu: "A100", spot: false });
    assert.equal(a100?.gpu, "A100-40GB");
  });

  it("retries a 429 and answers", async () => {
    emulator.faults.push({ kind: "status", status: 429 });
    const offers = await provider.offers({ spot: false });
    assert.ok(offers.length > 0);
  });

  it("refuses a wrong key with a non-retryable 401 that does not echo the key", async () => {
    const wrong = new VastProvider(
      new VastClient({ apiKey: "secret-nope", apiUrl: emulator.url, retry: FAST_RETRY }),
    );
    await assert.rejects(wrong.offers({}), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 401);
      assert.equal(err.retryable, false);
      assert.match(err.message, /refused \(VAST_API_KEY\)/, "names the setting to fix");
      assert.doesNotMatch(err.message, /secret-nope/);
      return true;
    });
  });

  it("reports Vast's own error message for a request it refuses", async () => {
    const client = new VastClient({ apiKey: emulator.apiKey, apiUrl: emulator.url, retry: FAST_RETRY });
    await assert.rejects(client.searchOffers({ num_gpus: { about: 2 } }), /Unknown operator about/);
  });
});
