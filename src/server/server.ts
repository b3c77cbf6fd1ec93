import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { AgentHub } from "../app/agent-hub.ts";
import { ensureBootstrapKey } from "../app/api-keys.ts";
import { type AppContext, createEvents } from "../app/context.ts";
import { CloudCredentials, CredentialVault } from "../app/credentials.ts";
import { ADMIN_USER_ID, ensureAdmin, SessionTokens } from "../app/identity.ts";
import { KeyPrincipalCache } from "../app/key-cache.ts";
import { Metrics } from "../app/metrics.ts";
import { OfferBook } from "../app/offers.ts";
import { openBlobStore } from "../blob/index.ts";
import { UrlSigner } from "../blob/url-signer.ts";
import { WorkerChemistry } from "../chem/chemistry.ts";
import type { Config } from "../config.ts";
import { RateLimiter } from "../domain/rate-limit.ts";
import { TerminationTracker } from "../domain/reconcile.ts";
import { MODEL_SETTINGS } from "../models/settings.ts";
import { detectLocalGpus, LocalProvider } from "../providers/local/index.ts";
import type { ComputeProvider } from "../providers/provider.ts";
import { simFromEnv } from "../providers/sim/index.ts";
import { Scheduler } from "../scheduler/scheduler.ts";
import { openStore } from "../store/index.ts";
import { buildHttpApp } from "./app.ts";
import { createLogger } from "./logging.ts";

/** The checkout: found upwards, since this module runs from src/server or bundled in dist/. */
export const REPO_ROOT = checkoutRoot(import.meta.dirname);
export const AGENT_BUNDLE = join(REPO_ROOT, "dist", "agent.mjs");
export const ADMIN_KEY_FILE = "admin-api-key";
const DEFAULT_ORG = "org_default";
/** RDKit's thread ends after this long without a check, returning its ~100 MB. */
const CHEMISTRY_IDLE_MS = 30_000;

function modelSettings(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(MODEL_SETTINGS.flatMap((name) => (env[name] ? [[name, env[name]]] : [])));
}

export interface RunningServer {
  url: string;
  ctx: AppContext;
  scheduler: Scheduler;
  /** Set when this start created the admin key: shown once, and saved in the data dir (0600). */
  createdApiKey: string | null;
  close(): Promise<void>;
}

/** Assembles the embedded default (or whatever the config names) and starts serving. */
export async function startServer(
  config: Config,
  options: {
    /** Providers beyond those configured by the environment (a benchmark's simulated market). */
    extraProviders?: ComputeProvider[];
  } = {},
): Promise<RunningServer> {
  const log = createLogger(config.logLevel);
  const store = openStore({
    databaseUrl: config.databaseUrl,
    schema: config.databaseSchema,
    dataDir: config.dataDir,
  });
  await store.migrate();
  let publicUrl = config.publicUrl ?? "";
  const blobs = await openBlobStore(config.blobStore, {
    root: join(config.dataDir, "blobs"),
    publicBaseUrl: () => publicUrl,
    signer: new UrlSigner(config.signingSecret),
  });
  const gpus = await detectLocalGpus();
  const provider = new LocalProvider({
    agentCommand: [process.execPath, AGENT_BUNDLE],
    maxInstances: config.localMaxInstances,
    gpus,
    workRoot: join(config.dataDir, "instances"),
    env: { HANGAR_PYTHON: config.python, ...modelSettings(process.env) },
    prices: config.localPrices,
  });
  const cloudOptions = { maxInstances: config.cloudMaxInstances };
  // The clouds (RunPod, Vast.ai, TensorDock) join below, from the environment and the org's credentials.
  const providers: ComputeProvider[] = [
    provider,
    simFromEnv(process.env, { ...cloudOptions, dataDir: config.dataDir }),
    ...(options.extraProviders ?? []),
  ].filter((source) => source !== null);
  const terminations = new TerminationTracker(config.reconcileIntervalS * 1000);
  const chemistry = new WorkerChemistry({ idleMs: CHEMISTRY_IDLE_MS });
  const ctx: AppContext = {
    config,
    store,
    blobs,
    providers,
    credentials: new CloudCredentials(new CredentialVault(config.credentialsKey)),
    offers: new OfferBook(providers, { ttlMs: config.offersCacheS * 1000, now: Date.now }),
    terminations,
    metrics: new Metrics(store, terminations),
    log,
    events: createEvents(),
    now: Date.now,
    draining: false,
    defaultOrgId: DEFAULT_ORG,
    sessions: new SessionTokens(config.signingSecret, config.accessTokenTtlS),
    rateLimiter: new RateLimiter(),
    keyPrincipals: new KeyPrincipalCache(config.apiKeyCacheS * 1000),
    chemistry,
  };
  await store.accounts.ensureOrg(DEFAULT_ORG, "default", ctx.now());
  await ensureAdmin(ctx);
  await ctx.credentials.refresh(ctx);
  const bootstrap = await ensureBootstrapKey(
    store,
    DEFAULT_ORG,
    ADMIN_USER_ID,
    config.bootstrapApiKey,
    ctx.now(),
  );
  const createdApiKey = bootstrap.created && !config.bootstrapApiKey ? bootstrap.key : null;
  if (createdApiKey) {
    writeFileSync(join(config.dataDir, ADMIN_KEY_FILE), `${createdApiKey}\n`, { mode: 0o600 });
  }

  const hub = new AgentHub(ctx);
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string })
    .version;
  const app = await buildHttpApp(ctx, hub, { agentBundlePath: AGENT_BUNDLE, version });
  const address = await app.listen({ host: config.host, port: config.port });
  publicUrl = config.publicUrl ?? address.replace("[::1]", "127.0.0.1");
  const scheduler = new Scheduler(ctx, hub, () => publicUrl);
  scheduler.start();
  log.info(
    {
      url: publicUrl,
      store: store.dialect,
      blobs: config.blobStore.kind,
      gpus: gpus.length,
      providers: ctx.providers.map((p) => p.name),
      data_dir: config.dataDir,
    },
    "hangar server started",
  );

  let closing: Promise<void> | undefined;
  return {
    url: publicUrl,
    ctx,
    scheduler,
    createdApiKey,
    close() {
      closing ??= (async () => {
        ctx.draining = true;
        await scheduler.stop();
        await scheduler.drain(config.shutdownGraceS * 1000);
        // Providers handed in belong to the caller, who may start another server on them.
        for (const provider of ctx.providers) {
          if (!options.extraProviders?.includes(provider)) await provider.close?.();
        }
        await app.close();
        await chemistry.close();
        await store.close();
        log.info("hangar server stopped");
      })();
      return closing;
    },
  };
}

function checkoutRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json in ${from} or above it`);
  }
}
