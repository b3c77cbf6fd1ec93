import type { KeyPrincipal } from "../store/accounts.ts";

/** Past this many keys the cache starts over, so its memory stays bounded whoever calls. */
const MAX_KEYS = 10_000;

/**
 * The API keys this process found in the last `ttlMs`, by hash, so a client polling a batch does not
 * have its key looked up on every read: on PostgreSQL, while a screen's children ended, that lookup
 * took GET /batches/{id} from 5.5-6.3 ms p99 to 10-13 ms (docs/benchmarks.md). Only keys found are
 * kept, never a miss. This process forgets them all whenever it changes a key or a membership; a
 * change made on another replica reaches this one within `ttlMs`. A key past its expiry is never
 * answered. `ttlMs` 0 keeps nothing.
 */
export class KeyPrincipalCache {
  readonly #ttlMs: number;
  readonly #found = new Map<string, { principal: KeyPrincipal; until: number }>();

  constructor(ttlMs: number) {
    this.#ttlMs = ttlMs;
  }

  get(hash: string, now: number): KeyPrincipal | null {
    const entry = this.#found.get(hash);
    if (!entry) return null;
    const { expiresAt } = entry.principal;
    if (entry.until <= now || (expiresAt !== null && expiresAt <= now)) {
      this.#found.delete(hash);
      return null;
    }
    return entry.principal;
  }

  remember(hash: string, principal: KeyPrincipal, now: number): void {
    if (this.#ttlMs <= 0) return;
    if (this.#found.size >= MAX_KEYS) this.#found.clear();
    this.#found.set(hash, { principal, until: now + this.#ttlMs });
  }

  forgetAll(): void {
    this.#found.clear();
  }
}
