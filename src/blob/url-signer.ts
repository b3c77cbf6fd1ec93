import { createHmac, timingSafeEqual } from "node:crypto";
import { forbidden } from "../domain/errors.ts";
import type { SignedMethod } from "./blob-store.ts";

/** HMAC-SHA256 wants a key at least as long as its output; shorter secrets are guessable offline. */
export const MIN_SECRET_BYTES = 32;

const EPOCH_SECONDS = /^\d{1,16}$/;

/**
 * Signs and verifies URLs for the blob routes the API serves itself (filesystem store). The signed
 * material is (method, key, expiry), so a URL only ever grants one method on one key until one time.
 */
export class UrlSigner {
  readonly #secret: Buffer;

  constructor(secret: Buffer | string) {
    const bytes = typeof secret === "string" ? Buffer.from(secret, "utf8") : Buffer.from(secret);
    if (bytes.length < MIN_SECRET_BYTES) {
      throw new Error(`URL signing secret must be at least ${MIN_SECRET_BYTES} bytes, got ${bytes.length}`);
    }
    this.#secret = bytes;
  }

  /** The base64url HMAC of (method, key, expiry). */
  sign(method: SignedMethod, key: string, expiresAtEpochSeconds: number): string {
    // `verify` only accepts whole seconds, so anything else would produce a URL that never works.
    if (!Number.isSafeInteger(expiresAtEpochSeconds) || expiresAtEpochSeconds < 0) {
      throw new RangeError(`expiry must be whole epoch seconds, got ${expiresAtEpochSeconds}`);
    }
    return this.#mac(method, key, String(expiresAtEpochSeconds));
  }

  /** `expires=…&sig=…`, ready to append after `?`. */
  query(method: SignedMethod, key: string, expiresAtEpochSeconds: number): string {
    const params = new URLSearchParams({
      expires: String(expiresAtEpochSeconds),
      sig: this.sign(method, key, expiresAtEpochSeconds),
    });
    return params.toString();
  }

  /**
   * Throws 403 `signature_invalid` unless `sig` was made by `sign(method, key, expires)` with this
   * secret, then 403 `signature_expired` if `nowMs` is at or past the expiry. `method` is the
   * request's own method (any string) and the query values may be missing, as they come off the wire.
   */
  verify(
    method: string,
    key: string,
    expires: string | undefined,
    sig: string | undefined,
    nowMs: number = Date.now(),
  ): void {
    if (expires === undefined || sig === undefined || !EPOCH_SECONDS.test(expires)) {
      throw forbidden("signature_invalid", "The URL is missing a valid signature or expiry.");
    }
    const expected = Buffer.from(this.#mac(method, key, expires), "utf8");
    const given = Buffer.from(sig, "utf8");
    // Check the signature before the expiry so that only genuine URLs learn they have expired.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw forbidden("signature_invalid", "The URL signature does not match this method and path.");
    }
    if (nowMs >= Number(expires) * 1000) {
      throw forbidden("signature_expired", "The signed URL has expired.");
    }
  }

  #mac(method: string, key: string, expires: string): string {
    // JSON keeps the fields unambiguous whatever characters they hold.
    return createHmac("sha256", this.#secret)
      .update(JSON.stringify(["hangar-blob-v1", method, key, expires]))
      .digest("base64url");
  }
}
