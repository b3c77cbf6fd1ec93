/**
 * Token buckets: each holds up to `capacity` tokens and refills `capacity` per minute. A request
 * takes one token from every bucket it counts against (its key, its user, its org) or from none.
 * Written by hand because the field's limiter (@fastify/rate-limit) counts fixed windows per one
 * key, and a request here must pass several buckets at once.
 */
export interface BucketLimit {
  name: string;
  /** Requests per minute; 0 turns this bucket off. */
  perMinute: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export type Admission = { admitted: true } | { admitted: false; retryAfterS: number; limit: string };

export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #maxBuckets: number;

  constructor(maxBuckets = 100_000) {
    this.#maxBuckets = maxBuckets;
  }

  admit(limits: readonly BucketLimit[], now: number): Admission {
    const active = limits.filter((limit) => limit.perMinute > 0);
    const buckets = active.map((limit) => this.#refilled(limit, now));
    const empty = buckets.findIndex((bucket) => bucket.tokens < 1);
    if (empty >= 0) {
      const limit = active[empty]!;
      const msPerToken = 60_000 / limit.perMinute;
      return {
        admitted: false,
        retryAfterS: Math.max(1, Math.ceil(((1 - buckets[empty]!.tokens) * msPerToken) / 1000)),
        limit: limit.name,
      };
    }
    for (const bucket of buckets) bucket.tokens -= 1;
    return { admitted: true };
  }

  #refilled(limit: BucketLimit, now: number): Bucket {
    let bucket = this.#buckets.get(limit.name);
    if (!bucket) {
      // Buckets of clients that stopped calling go first: a full bucket is the same as none.
      if (this.#buckets.size >= this.#maxBuckets) this.#forgetFull(now);
      bucket = { tokens: limit.perMinute, updatedAt: now };
      this.#buckets.set(limit.name, bucket);
      return bucket;
    }
    const refill = ((now - bucket.updatedAt) / 60_000) * limit.perMinute;
    bucket.tokens = Math.min(limit.perMinute, bucket.tokens + refill);
    bucket.updatedAt = now;
    return bucket;
  }

  #forgetFull(now: number): void {
    for (const [name, bucket] of this.#buckets) {
      if (now - bucket.updatedAt > 60_000) this.#buckets.delete(name);
    }
  }
}
