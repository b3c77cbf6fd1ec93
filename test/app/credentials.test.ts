import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { CredentialVault, validCredential } from "../../src/app/credentials.ts";
import { HangarError } from "../../src/domain/errors.ts";

describe("sealed cloud credentials", () => {
  const vault = new CredentialVault(randomBytes(32));
  const credential = { apiKey: "rp_live_0123456789abcdef", apiUrl: null };

  it("seal and open round-trip; the sealed form holds no plaintext and a hint of four characters", () => {
    const sealed = vault.seal("org_a", "runpod", credential);
    assert.deepEqual(vault.open({ ...sealed, updatedAt: 0 }), credential);
    assert.equal(sealed.keyHint, "cdef");
    assert.ok(!JSON.stringify(sealed).includes("0123456789"), "no part of the key beyond the hint");
    const again = vault.seal("org_a", "runpod", credential);
    assert.notEqual(again.ciphertext, sealed.ciphertext, "a fresh IV each time");
  });

  it("does not open when altered, moved to another org or provider, or under another key", () => {
    const sealed = { ...vault.seal("org_a", "runpod", credential), updatedAt: 0 };
    const flipped = Buffer.from(sealed.ciphertext, "base64");
    flipped[0] = flipped[0]! ^ 1;
    assert.throws(() => vault.open({ ...sealed, ciphertext: flipped.toString("base64") }));
    assert.throws(() => vault.open({ ...sealed, orgId: "org_b" }));
    assert.throws(() => vault.open({ ...sealed, provider: "vastai" }));
    assert.throws(() => new CredentialVault(randomBytes(32)).open(sealed));
    assert.throws(() => new CredentialVault(randomBytes(16)), /32 bytes/);
  });

  it("refuses unusable input with stable codes", () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        return error instanceof HangarError ? [error.status, error.code] : ["not a HangarError"];
      }
      return ["accepted"];
    };
    assert.deepEqual(
      code(() => validCredential("gcp", { api_key: "k" })),
      [404, "unknown_provider"],
    );
    assert.deepEqual(
      code(() => validCredential("vastai", { api_key: "a key" })),
      [400, "invalid_credential"],
    );
    assert.deepEqual(
      code(() => validCredential("vastai", { api_key: "k\n" })),
      ["accepted"],
      "trailing newline trimmed",
    );
    assert.deepEqual(
      code(() => validCredential("vastai", { api_key: "k", api_url: "ftp://x" })),
      [400, "invalid_credential"],
    );
    assert.deepEqual(validCredential("vastai", { api_key: " k ", api_url: "https://proxy.example/api/" }), {
      provider: "vastai",
      credential: { apiKey: "k", apiUrl: "https://proxy.example/api" },
    });
  });
});
