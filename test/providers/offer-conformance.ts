import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { matchesQuery, type Offer } from "../../src/domain/offers.ts";
import type { RetryPolicy } from "../../src/providers/http.ts";
import type { OfferSource } from "../../src/providers/provider.ts";

/** Provider clients in tests retry quickly: the emulators answer at once. */
export const FAST_RETRY: RetryPolicy = {
  attempts: 3,
  firstBackoffMs: 10,
  maxBackoffMs: 2_000,
  timeoutMs: 5_000,
};

export interface OfferSourceHarness {
  source: OfferSource;
  close: () => Promise<void>;
}

/** What every provider's offers must look like, registered as node:test cases against one harness. */
export function runOfferSourceConformance(name: string, open: () => Promise<OfferSourceHarness>): void {
  describe(`OfferSource conformance: ${name}`, () => {
    let harness: OfferSourceHarness;
    before(async () => {
      harness = await open();
    });
    after(() => harness.close());

    const wellFormed = (offer: Offer, startedAt: number) => {
      assert.equal(offer.provider, harness.source.name);
      assert.ok(offer.id.length > 0);
      assert.ok(offer.gpu.length > 0);
      assert.ok(Number.isInteger(offer.gpuCount) && offer.gpuCount >= 0, `gpuCount ${offer.gpuCount}`);
      assert.ok(offer.gpuCount === 0 || offer.gpuMemoryGb > 0, `gpuMemoryGb ${offer.gpuMemoryGb}`);
      assert.ok(
        Number.isFinite(offer.pricePerHour) && offer.pricePerHour >= 0,
        `price ${offer.pricePerHour}`,
      );
      assert.equal(typeof offer.spot, "boolean");
      assert.ok(offer.reliability === null || (offer.reliability >= 0 && offer.reliability <= 1));
      assert.ok(
        offer.fetchedAt >= startedAt && offer.fetchedAt <= Date.now(),
        "fetchedAt is the time of the answer",
      );
    };

    it("answers live, well-formed offers with unique ids", async () => {
      const startedAt = Date.now();
      const offers = await harness.source.offers({});
      assert.ok(offers.length > 0, "some offers");
      for (const offer of offers) wellFormed(offer, startedAt);
      const ids = offers.map((o) => `${o.id}/${o.spot}`);
      assert.equal(new Set(ids).size, ids.length, "one offer per id and kind");
    });

    it("answers at least every offer that a narrower query matches", async () => {
      const all = await harness.source.offers({});
      const [sample] = all.filter((o) => o.gpuCount > 0);
      const query = sample ? { gpu: sample.gpu, spot: sample.spot } : { spot: false };
      const narrow = await harness.source.offers(query);
      const expected = all.filter((o) => matchesQuery(o, query)).map((o) => o.id);
      const got = narrow.filter((o) => matchesQuery(o, query)).map((o) => o.id);
      assert.deepEqual(got.sort(), expected.sort());
    });
  });
}
