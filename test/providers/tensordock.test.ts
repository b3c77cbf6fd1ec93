import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ProviderApiError } from "../../src/providers/http.ts";
import { TensorDockClient, TensorDockProvider } from "../../src/providers/tensordock/index.ts";
import { gpuOfName } from "../../src/providers/tensordock/tensordock-provider.ts";
import { startTensorDockEmulator, type TensorDockEmulator } from "../emulators/tensordock.ts";
import { FAST_RETRY, runOfferSourceConformance } from "./offer-conformance.ts";

runOfferSourceConformance("tensordock (emulator)", async () => {
  const emulator = await startTensorDockEmulator();
  const client = new TensorDockClient({ token: emulator.token, apiUrl: emulator.url, retry: FAST_RETRY });
  return { source: new TensorDockProvider(client), close: () => emulator.close() };
});

describe("TensorDock client and offers against the emulator", () => {
  let emulator: TensorDockEmulator;
  let provider: TensorDockProvider;
  before(async () => {
    emulator = await startTensorDockEmulator();
    provider = new TensorDockProvider(
      new TensorDockClient({ token: emulator.token, apiUrl: emulator.url, retry: FAST_RETRY }),
    );
  });
  after(() => emulator.close());

  it("reads the GPU model and memory from TensorDock's names", () => {
    assert.deepEqual(gpuOfName("h100-sxm5-80gb"), { gpu: "H100", memoryGb: 80 });
    assert.deepEqual(gpuOfName("geforcertx4090-pcie-24gb"), { gpu: "RTX4090", memoryGb: 24 });
    assert.deepEqual(gpuOfName("a100-pcie-80gb"), { gpu: "A100-80GB", memoryGb: 80 });
    assert.deepEqual(gpuOfName("rtxa6000-pcie-48gb"), { gpu: "rtxa6000-pcie-48gb", memoryGb: 48 });
  });

  it("offers each location's GPUs on demand, priced for the count asked, up to each GPU's maximum", async () => {
    const offers = await provider.offers({ minGpus: 4 });
    assert.deepEqual(
      offers.map((o) => [o.id, o.gpu, o.gpuCount, o.pricePerHour, o.region, o.vcpus]),
      [
        ["loc-us-chicago-1:h100-sxm5-80gb", "H100", 4, 8.8, "Chicago, United States", 128],
        ["loc-us-chicago-1:geforcertx4090-pcie-24gb", "RTX4090", 4, 1.4, "Chicago, United States", 32],
      ],
      "Frankfurt's L40s go up to 2",
    );
    assert.deepEqual(await provider.offers({ spot: true }), [], "TensorDock sells no spot");
  });

  it("retries a 429 and refuses a wrong token without echoing it", async () => {
    emulator.faults.push({ kind: "status", status: 429, retryAfterS: 0 });
    assert.equal((await provider.offers({})).length, 3);
    const wrong = new TensorDockProvider(
      new TensorDockClient({ token: "td-secret-nope", apiUrl: emulator.url, retry: FAST_RETRY }),
    );
    await assert.rejects(wrong.offers({}), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 401);
      assert.match(err.message, /refused \(TENSORDOCK_API_TOKEN\)/, "names the setting to fix");
      assert.doesNotMatch(err.message, /td-secret-nope/);
      return true;
    });
  });
});
