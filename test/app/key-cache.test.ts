import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KeyPrincipalCache } from "../../src/app/key-cache.ts";
import type { KeyPrincipal } from "../../src/store/accounts.ts";

const principal = (overrides: Partial<KeyPrincipal> = {}): KeyPrincipal => ({
  keyId: "key_1",
  orgId: "org_1",
  userId: "user_1",
  scopes: ["read"],
  role: "member",
  platformAdmin: false,
  expiresAt: null,
  ...overrides,
});

/** A key store that answers `answer` and counts its lookups. */
function keys(answer: KeyPrincipal | null = principal()) {
  const lookups: string[] = [];
  return {
    lookups,
    lookUp: async (hash: string) => {
      lookups.push(hash);
      return answer;
    },
  };
}

describe("the API key cache", () => {
  it("answers a key it found for its time to live, then looks it up again", async () => {
    const cache = new KeyPrincipalCache(5_000);
    const store = keys();
    assert.deepEqual(await cache.find("h", 1_000, store.lookUp), principal());
    assert.deepEqual(await cache.find("h", 5_999, store.lookUp), principal());
    assert.equal(store.lookups.length, 1);
    await cache.find("h", 6_000, store.lookUp);
    assert.equal(store.lookups.length, 2);
  });

  it("never keeps a miss, and never answers a key past its own expiry", async () => {
    const cache = new KeyPrincipalCache(5_000);
    const missing = keys(null);
    assert.equal(await cache.find("nope", 0, missing.lookUp), null);
    assert.equal(await cache.find("nope", 1, missing.lookUp), null);
    assert.equal(missing.lookups.length, 2);
    const expiring = keys(principal({ expiresAt: 2_000 }));
    await cache.find("h", 1_000, expiring.lookUp);
    await cache.find("h", 1_999, expiring.lookUp);
    assert.equal(expiring.lookups.length, 1);
    await cache.find("h", 2_000, expiring.lookUp);
    assert.equal(expiring.lookups.length, 2, "an expired key is looked up (and refused by the store)");
  });

  it("forgets every key at once, even one whose lookup was under way, and keeps nothing at 0", async () => {
    const cache = new KeyPrincipalCache(5_000);
    const store = keys();
    await cache.find("a", 0, store.lookUp);
    cache.forgetAll();
    await cache.find("a", 1, store.lookUp);
    assert.equal(store.lookups.length, 2);
    // A revocation lands while a request is looking its key up: that answer is used once, not kept.
    await cache.find("b", 2, async (hash) => {
      cache.forgetAll();
      return store.lookUp(hash);
    });
    await cache.find("b", 3, store.lookUp);
    assert.equal(store.lookups.filter((h) => h === "b").length, 2);
    const off = new KeyPrincipalCache(0);
    await off.find("a", 0, store.lookUp);
    await off.find("a", 0, store.lookUp);
    assert.equal(store.lookups.length, 6);
  });

  it("starts over past 10,000 keys, so whoever calls cannot grow it without bound", async () => {
    const cache = new KeyPrincipalCache(5_000);
    const store = keys();
    for (let i = 0; i < 10_001; i++) await cache.find(`k${i}`, 0, store.lookUp);
    await cache.find("k10000", 1, store.lookUp);
    assert.equal(store.lookups.length, 10_001, "the newest key is kept");
    await cache.find("k0", 1, store.lookUp);
    assert.equal(store.lookups.length, 10_002, "the older ones were let go");
  });
});
