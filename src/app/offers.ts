import {
  cheapestFirst,
  type MarketRow,
  marketSummary,
  matchesQuery,
  type Offer,
  type OfferQuery,
} from "../domain/offers.ts";
import type { OfferSource } from "../providers/provider.ts";

/** A provider that could not answer, reported beside the offers of those that did. */
export interface ProviderFailure {
  provider: string;
  message: string;
}

export interface OfferSearch {
  offers: Offer[];
  failures: ProviderFailure[];
}

/**
 * Every configured provider's live offers, merged cheapest first. Each provider's answer is kept for
 * a short time per query (offers go stale in minutes; providers rate-limit); a provider that fails
 * is reported, not fatal, and its failure is not cached.
 */
export class OfferBook {
  readonly #sources: readonly OfferSource[];
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, { at: number; offers: Promise<Offer[]> }>();

  constructor(sources: readonly OfferSource[], options: { ttlMs: number; now: () => number }) {
    this.#sources = sources;
    this.#ttlMs = options.ttlMs;
    this.#now = options.now;
  }

  get providers(): string[] {
    return this.#sources.map((source) => source.name);
  }

  async search(query: OfferQuery): Promise<OfferSearch> {
    const sources = this.#sources.filter((s) => query.provider === undefined || s.name === query.provider);
    const answers = await Promise.allSettled(sources.map((source) => this.#offersOf(source, query)));
    const offers: Offer[] = [];
    const failures: ProviderFailure[] = [];
    answers.forEach((answer, i) => {
      if (answer.status === "fulfilled") offers.push(...answer.value.filter((o) => matchesQuery(o, query)));
      else failures.push({ provider: sources[i]!.name, message: (answer.reason as Error).message });
    });
    return { offers: offers.sort(cheapestFirst), failures };
  }

  async market(): Promise<{ rows: MarketRow[]; failures: ProviderFailure[] }> {
    const { offers, failures } = await this.search({});
    return { rows: marketSummary(offers), failures };
  }

  #offersOf(source: OfferSource, query: OfferQuery): Promise<Offer[]> {
    // Providers answer their cheapest offers first, so a price cap removes only the tail: it is
    // applied here, and one cached answer serves every cap.
    const asked: OfferQuery = { ...query };
    delete asked.provider;
    delete asked.maxPricePerHour;
    const key = `${source.name} ${JSON.stringify(asked)}`;
    const now = this.#now();
    const cached = this.#cache.get(key);
    if (cached && now - cached.at < this.#ttlMs) return cached.offers;
    for (const [k, entry] of this.#cache) if (now - entry.at >= this.#ttlMs) this.#cache.delete(k);
    const offers = source.offers(asked);
    this.#cache.set(key, { at: now, offers });
    offers.catch(() => {
      if (this.#cache.get(key)?.offers === offers) this.#cache.delete(key);
    });
    return offers;
  }
}
