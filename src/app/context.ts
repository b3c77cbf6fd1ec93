import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { BlobStore } from "../blob/blob-store.ts";
import type { Chemistry } from "../chem/ligands.ts";
import type { Config } from "../config.ts";
import type { RateLimiter } from "../domain/rate-limit.ts";
import type { TerminationTracker } from "../domain/reconcile.ts";
import type { ComputeProvider } from "../providers/provider.ts";
import type { Store } from "../store/store.ts";
import type { CloudCredentials } from "./credentials.ts";
import type { SessionTokens } from "./identity.ts";
import type { KeyPrincipalCache } from "./key-cache.ts";
import type { Metrics } from "./metrics.ts";
import type { OfferBook } from "./offers.ts";

/** The resources every service shares, built once per server process. */
export interface AppContext {
  config: Config;
  store: Store;
  blobs: BlobStore;
  /** This host first, then every configured cloud; each instance names its provider. Replaced when credentials change. */
  providers: readonly ComputeProvider[];
  /** Live offers of every configured provider (this machine, RunPod, Vast.ai, …). Replaced with `providers`. */
  offers: OfferBook;
  /** The org's stored cloud credentials, and the clouds built from them. */
  credentials: CloudCredentials;
  /** Stray instances whose termination the provider has not confirmed yet (reconciler). */
  terminations: TerminationTracker;
  metrics: Metrics;
  log: Logger;
  /** In-process wake-ups: "work" when a job becomes claimable, "job:<id>" when a job changes. */
  events: EventEmitter;
  now: () => number;
  /** Set on graceful shutdown: agents get no new work. */
  draining: boolean;
  /** The deployment's own org: its first admin's, and the owner of the clouds' instances. */
  defaultOrgId: string;
  /** Signs and checks signed-in sessions' access tokens. */
  sessions: SessionTokens;
  /** Request rate limits per API key, user and org (in this process). */
  rateLimiter: RateLimiter;
  /** API keys found lately (HANGAR_API_KEY_CACHE_S), forgotten when this process changes keys or members. */
  keyPrincipals: KeyPrincipalCache;
  /** RDKit, for checking ligands and reading SD files. */
  chemistry: Chemistry;
}

export function createEvents(): EventEmitter {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return events;
}
