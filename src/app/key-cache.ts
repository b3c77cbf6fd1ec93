import type { KeyPrincipal } from "../store/accounts.ts";

/** Past this many keys the cache starts over, so its memory stays bounded whoever calls. */
const MAX_KEYS = 10_000;

/**
 * The API keys this process found in the last `ttlMs`, by hash, so a client polling a batch does not
 * have its key looked up on every read: on PostgreSQL, while a screen's children ended, that
 * three-table lookup was most of a batch read's database time (docs/benchmarks.md). Only keys found
 * are kept, never a miss. This process forgets them all whenever it changes a key or a membership,
 * and a lookup that was under way meanwhile is not kept; a change made on another replica reaches
 * this one within `ttlMs`. A key past its expiry is never answered. `ttlMs` 0 keeps nothing.
 */
export class KeyPrincipalCache {
  readonly #ttlMs: number;
  readonly #found = new Map<string, { principal: KeyPrincipal; until: number }>();
  /** Counts forgetAll calls, so a lookup that overlapped one is not kept. */
  #generation = 0;

  constructor(ttlMs: number) {
    this.#ttlMs = ttlMs;
  }

  /** The key with this hash: the one found within `ttlMs`, or `lookUp`'s answer. */
  async find(
    hash: string,
    now: number,
    lookUp: (hash: string) => Promise<KeyPrincipal | null>,
  ): Promise<KeyPrincipal | null> {
    const entry = this.#found.get(hash);
    if (entry) {
      const { expiresAt } = entry.principal;
      if (entry.until > now && (expiresAt === null || expiresAt > now)) return entry.principal;
      this.#found.delete(hash);
    }
    const generation = this.#generation;
    const principal = await lookUp(hash);
    if (principal && this.#ttlMs > 0 && generation === this.#generation) {
      if (this.#found.size >= MAX_KEYS) this.#found.clear();
      this.#found.set(hash, { principal, until: now + this.#ttlMs });
    }
    return principal;
  }

  forgetAll(): void {
    this.#generation++;
    this.#found.clear();
  }
}
