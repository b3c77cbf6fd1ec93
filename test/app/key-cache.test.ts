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

describe("the API key cache", () => {
  it("answers a key it found for its time to live, then looks it up again", () => {
    const cache = new KeyPrincipalCache(5_000);
    assert.equal(cache.get("h", 1_000), null);
    cache.remember("h", principal(), 1_000);
    assert.deepEqual(cache.get("h", 5_999), principal());
    assert.equal(cache.get("h", 6_000), null);
    assert.equal(cache.get("h", 1_000), null, "an entry past its time is gone");
  });

  it("never answers a key past its own expiry", () => {
    const cache = new KeyPrincipalCache(5_000);
    cache.remember("h", principal({ expiresAt: 2_000 }), 1_000);
    assert.ok(cache.get("h", 1_999));
    assert.equal(cache.get("h", 2_000), null);
  });

  it("forgets every key at once, and keeps nothing with a time to live of 0", () => {
    const cache = new KeyPrincipalCache(5_000);
    cache.remember("a", principal(), 0);
    cache.remember("b", principal({ keyId: "key_2" }), 0);
    cache.forgetAll();
    assert.equal(cache.get("a", 1), null);
    assert.equal(cache.get("b", 1), null);
    const off = new KeyPrincipalCache(0);
    off.remember("a", principal(), 0);
    assert.equal(off.get("a", 0), null);
  });

  it("starts over past 10,000 keys, so whoever calls cannot grow it without bound", () => {
    const cache = new KeyPrincipalCache(5_000);
    for (let i = 0; i < 10_000; i++) cache.remember(`k${i}`, principal(), 0);
    assert.ok(cache.get("k9999", 1));
    cache.remember("one more", principal(), 0);
    assert.equal(cache.get("k0", 1), null);
    assert.ok(cache.get("one more", 1));
  });
});
