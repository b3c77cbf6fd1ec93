import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MIN_SECRET_BYTES, UrlSigner } from "../../src/blob/url-signer.ts";

const SECRET = "0123456789abcdef0123456789abcdef";
const NOW_MS = 1_700_000_000_000;
const EXPIRES = NOW_MS / 1000 + 60;

const invalid = { status: 403, code: "signature_invalid" };

describe("UrlSigner", () => {
  const signer = new UrlSigner(SECRET);
  const sig = signer.sign("GET", "runs/run_1/out.ipynb", EXPIRES);

  it("verifies its own signature for the same method, key and expiry", () => {
    signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES), sig, NOW_MS);
  });

  it("produces base64url HMAC-SHA256 in an expires/sig query", () => {
    assert.match(sig, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(signer.query("GET", "runs/run_1/out.ipynb", EXPIRES), `expires=${EXPIRES}&sig=${sig}`);
    assert.equal(new UrlSigner(Buffer.from(SECRET)).sign("GET", "runs/run_1/out.ipynb", EXPIRES), sig);
  });

  it("binds the method: a GET signature does not allow PUT", () => {
    assert.throws(() => signer.verify("PUT", "runs/run_1/out.ipynb", String(EXPIRES), sig, NOW_MS), invalid);
    assert.throws(() => signer.verify("HEAD", "runs/run_1/out.ipynb", String(EXPIRES), sig, NOW_MS), invalid);
  });

  it("binds the key, including its prefix", () => {
    for (const key of ["runs/run_1/out.ipynbx", "runs/run_1/other", "runs/run_1", "runs/run_2/out.ipynb"]) {
      assert.throws(() => signer.verify("GET", key, String(EXPIRES), sig, NOW_MS), invalid, key);
    }
  });

  it("binds the expiry: extending it breaks the signature", () => {
    assert.throws(
      () => signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES + 1), sig, NOW_MS),
      invalid,
    );
    assert.throws(() => signer.verify("GET", "runs/run_1/out.ipynb", `0${EXPIRES}`, sig, NOW_MS), invalid);
  });

  it("rejects signatures from another secret and altered signatures", () => {
    const other = new UrlSigner(`${SECRET}!`).sign("GET", "runs/run_1/out.ipynb", EXPIRES);
    for (const bad of [
      other,
      `${sig.slice(0, -1)}${sig.endsWith("A") ? "B" : "A"}`,
      sig.slice(1),
      `${sig}=`,
      "",
    ]) {
      assert.throws(
        () => signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES), bad, NOW_MS),
        invalid,
      );
    }
  });

  it("rejects missing or malformed query values as invalid", () => {
    for (const expires of [undefined, "", "-1", "1e9", "12a", " 12", "1.5"]) {
      assert.throws(() => signer.verify("GET", "runs/run_1/out.ipynb", expires, sig, NOW_MS), invalid);
    }
    assert.throws(
      () => signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES), undefined, NOW_MS),
      invalid,
    );
  });

  it("expires at the expiry second, with 403 signature_expired", () => {
    const expired = { status: 403, code: "signature_expired" };
    signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES), sig, EXPIRES * 1000 - 1);
    assert.throws(
      () => signer.verify("GET", "runs/run_1/out.ipynb", String(EXPIRES), sig, EXPIRES * 1000),
      expired,
    );
  });

  it("reports a bad signature as invalid even when also expired", () => {
    assert.throws(() => signer.verify("GET", "other", String(EXPIRES), sig, EXPIRES * 1000 + 1), invalid);
  });

  it("refuses short secrets and non-integer expiries", () => {
    assert.throws(() => new UrlSigner("x".repeat(MIN_SECRET_BYTES - 1)), /at least 32 bytes/);
    assert.throws(() => signer.sign("GET", "k", 1.5), RangeError);
    assert.throws(() => signer.sign("GET", "k", -1), RangeError);
  });
});
