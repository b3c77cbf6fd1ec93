import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { MachinePolicy } from "./domain/machines.ts";
import {
  PROVISIONING_STRATEGIES,
  type ProvisioningStrategy,
  parseWarmPools,
  type WarmPool,
} from "./domain/provisioning.ts";

/** Every setting, read from the environment once. Documented in README.md and .env.example. */
export interface Config {
  host: string;
  port: number;
  dataDir: string;
  databaseUrl: string | undefined;
  databaseSchema: string | undefined;
  /** Base URL that agents and signed URLs use to reach this server. */
  publicUrl: string | undefined;
  bootstrapApiKey: string | undefined;
  signingSecret: string;
  /** Seals orgs' cloud credentials at rest (AES-256-GCM, 32 bytes). */
  credentialsKey: Buffer;
  /** Labels this deployment's instances at their providers; replicas of one deployment share it. */
  deploymentId: string;
  /** An agent that cannot reach the control plane this long ends its instance (kill switch). */
  agentReconnectS: number;
  /** Every instance ends itself after this long, even with work in hand; 0: never. */
  instanceMaxLifetimeS: number;
  /** How often providers' own instance lists are checked for instances this deployment must not run. */
  reconcileIntervalS: number;
  maxUploadBytes: number;
  signedUrlTtlS: number;
  leaseS: number;
  heartbeatS: number;
  idleTimeoutS: number;
  defaultTimeoutS: number;
  schedulerIntervalMs: number;
  shutdownGraceS: number;
  localMaxInstances: number;
  /** Most instances each cloud provider may hold at once. */
  cloudMaxInstances: number;
  /** The image cloud instances boot; it needs Node.js ≥ 22 (for the agent) and Python with nbclient. */
  instanceImage: string;
  instanceDiskGb: number;
  /** Launch GPU jobs on spot (interruptible) offers instead of on-demand ones. */
  preferSpot: boolean;
  /** How often each cloud instance's state is asked of its provider (boot, preemption, disappearance). */
  describeIntervalS: number;
  /** How a GPU run's instance is launched (domain/provisioning.ts). */
  provisioningStrategy: ProvisioningStrategy;
  /** Per provider, launch-to-register wait before giving an instance up, overriding the provider's own. */
  bootTimeoutS: Record<string, number>;
  /** Offers a race starts at once. */
  raceWidth: number;
  /** Cloud instances kept up per GPU type, whether work waits or not. */
  warmPools: WarmPool[];
  /** Most ligands one batch may hold. */
  maxBatchLigands: number;
  /** Batches with more ligands are accepted at once and checked in the background. */
  batchSyncCheckLimit: number;
  /** Children of one batch running at once when the request gives no max_concurrent. */
  defaultMaxConcurrent: number;
  /** How often a running batch's artifacts (results CSV, summary, histogram, top-10 zip) are refreshed. */
  batchArtifactsRefreshS: number;
  /** When launches skip a machine that keeps failing (domain/machines.ts). */
  machinePolicy: MachinePolicy;
  /** How long one provider's answer to an offer search is reused. */
  offersCacheS: number;
  /** How often the market view's prices are kept for its history; 0: never. */
  marketSnapshotS: number;
  python: string;
  logLevel: string;
  /** Where blobs live: `fs` under the data directory, or an S3 bucket or Azure container that remote instances reach. */
  blobStore: BlobStoreSettings;
  /** The deployment's first platform admin (owner of the default org). */
  adminEmail: string;
  /** Lets the admin sign in with a password; absent: API keys only. */
  adminPassword: string | undefined;
  /** Lifetime of a signed-in session's access token (JWT), and of its refresh token. */
  accessTokenTtlS: number;
  refreshTokenTtlS: number;
  /** Added to every provider's price, in percent. */
  priceMarkupPercent: number;
  /** This host's price per hour: `cpu` for one CPU instance, and per GPU by type. Default 0. */
  localPrices: Record<string, number>;
  /** Requests per minute per API key or user, and per org; 0 turns a limit off. */
  rateLimitPerMinute: number;
  orgRateLimitPerMinute: number;
  /** How long a found API key is reused before it is looked up again; 0: every request looks it up. */
  apiKeyCacheS: number;
  /**
   * Which orgs need credits to cover their work before it runs: `tenants` (every org but the
   * deployment's own, which pays its clouds directly), `all`, or `off`. Usage is charged either way.
   */
  creditChecks: CreditChecks;
  /** Sign-in and token requests per minute per client address. */
  loginRateLimitPerMinute: number;
  /** Claims prefer the org with the fewest running jobs among equal priorities. */
  fairShare: boolean;
  /** How often holds are settled, idle instance time billed, budgets and balances checked. */
  billingIntervalS: number;
}

export type CreditChecks = "tenants" | "all" | "off";

function creditChecks(value: string | undefined): CreditChecks {
  const chosen = (value || "tenants") as CreditChecks;
  if (!["tenants", "all", "off"].includes(chosen)) {
    throw new Error(`HANGAR_CREDIT_CHECKS must be one of tenants, all, off, not "${value}"`);
  }
  return chosen;
}

export type BlobStoreSettings =
  | { kind: "fs" }
  | {
      kind: "s3";
      bucket: string;
      region: string;
      endpoint: string | undefined;
      forcePathStyle: boolean | undefined;
      keyPrefix: string;
    }
  | { kind: "azure"; connectionString: string; container: string; keyPrefix: string };

function blobStoreSettings(env: NodeJS.ProcessEnv): BlobStoreSettings {
  const kind = env.HANGAR_BLOB_STORE || "fs";
  const keyPrefix = env.HANGAR_BLOB_PREFIX ?? "";
  if (keyPrefix !== "" && !keyPrefix.endsWith("/")) {
    throw new Error(`HANGAR_BLOB_PREFIX must end with "/" (got "${keyPrefix}")`);
  }
  if (kind === "fs") return { kind };
  if (kind === "s3") {
    const bucket = env.HANGAR_S3_BUCKET;
    if (!bucket) throw new Error("HANGAR_BLOB_STORE=s3 needs HANGAR_S3_BUCKET");
    const pathStyle = env.HANGAR_S3_FORCE_PATH_STYLE;
    if (pathStyle !== undefined && pathStyle !== "" && pathStyle !== "true" && pathStyle !== "false") {
      throw new Error(`HANGAR_S3_FORCE_PATH_STYLE must be true or false (got "${pathStyle}")`);
    }
    return {
      kind,
      bucket,
      region: env.HANGAR_S3_REGION || env.AWS_REGION || "us-east-1",
      endpoint: env.HANGAR_S3_ENDPOINT || undefined,
      forcePathStyle: pathStyle ? pathStyle === "true" : undefined,
      keyPrefix,
    };
  }
  if (kind === "azure") {
    const connectionString =
      env.HANGAR_AZURE_STORAGE_CONNECTION_STRING || env.AZURE_STORAGE_CONNECTION_STRING;
    if (!connectionString) {
      throw new Error("HANGAR_BLOB_STORE=azure needs HANGAR_AZURE_STORAGE_CONNECTION_STRING");
    }
    return { kind, connectionString, container: env.HANGAR_AZURE_CONTAINER || "hangar", keyPrefix };
  }
  throw new Error(`HANGAR_BLOB_STORE must be fs, s3 or azure (got "${kind}")`);
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name} must be an integer ≥ ${min} (got "${raw}")`);
  }
  return value;
}

function fraction(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    throw new Error(`${name} must be a number from 0 to 1 (got "${raw}")`);
  }
  return value;
}

function decimal(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number ≥ 0 (got "${raw}")`);
  return value;
}

/** `cpu:0.05,RTX4090:0.40`: dollars per hour for a CPU instance, and per GPU of each type. */
function localPrices(text: string | undefined): Record<string, number> {
  if (!text?.trim()) return {};
  return Object.fromEntries(
    text.split(",").map((part) => {
      const match = /^\s*([A-Za-z0-9_-]+)\s*:\s*(\d+(?:\.\d+)?)\s*$/.exec(part);
      if (!match) {
        throw new Error(
          `HANGAR_LOCAL_PRICE_PER_HOUR: "${part}" is not TYPE:PRICE (e.g. cpu:0.05,RTX4090:0.4)`,
        );
      }
      return [match[1]!, Number(match[2])];
    }),
  );
}

/** A random value (after `prefix`) kept in the data directory, so it survives restarts without configuration. */
function persistentRandom(dataDir: string, file: string, bytes: number, prefix = ""): string {
  const path = join(dataDir, file);
  if (existsSync(path)) return readFileSync(path, "utf8").trim();
  mkdirSync(dataDir, { recursive: true });
  const value = `${prefix}${randomBytes(bytes).toString("base64url")}`;
  writeFileSync(path, `${value}\n`, { mode: 0o600, flag: "wx" });
  return value;
}

/** `PROVIDER:SECONDS` pairs separated by commas (`runpod:1800,vastai:300`). */
function perProvider(env: NodeJS.ProcessEnv, name: string): Record<string, number> {
  const text = env[name]?.trim();
  if (!text) return {};
  return Object.fromEntries(
    text.split(",").map((part) => {
      const match = /^\s*([a-z0-9_-]+)\s*:\s*(\d+)\s*$/.exec(part);
      if (!match || Number(match[2]) < 1) {
        throw new Error(`${name}: "${part}" is not PROVIDER:SECONDS (e.g. runpod:1800)`);
      }
      return [match[1]!, Number(match[2])];
    }),
  );
}

function strategy(value: string | undefined): ProvisioningStrategy {
  const chosen = (value || "coldstart") as ProvisioningStrategy;
  if (!PROVISIONING_STRATEGIES.includes(chosen)) {
    throw new Error(
      `HANGAR_PROVISIONING_STRATEGY must be one of ${PROVISIONING_STRATEGIES.join(", ")}, not "${value}"`,
    );
  }
  return chosen;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const dataDir = resolve(overrides.dataDir ?? env.HANGAR_DATA_DIR ?? ".hangar");
  return {
    host: env.HANGAR_HOST ?? "127.0.0.1",
    port: int(env, "HANGAR_PORT", 7420),
    dataDir,
    databaseUrl: env.DATABASE_URL || undefined,
    databaseSchema: env.HANGAR_DATABASE_SCHEMA || undefined,
    publicUrl: env.HANGAR_PUBLIC_URL || undefined,
    bootstrapApiKey: env.HANGAR_BOOTSTRAP_API_KEY || undefined,
    signingSecret: env.HANGAR_SIGNING_SECRET || persistentRandom(dataDir, "signing-secret", 32),
    credentialsKey: env.HANGAR_CREDENTIALS_KEY
      ? Buffer.from(env.HANGAR_CREDENTIALS_KEY, "base64")
      : Buffer.from(persistentRandom(dataDir, "credentials-key", 32), "base64url"),
    deploymentId: env.HANGAR_DEPLOYMENT_ID || persistentRandom(dataDir, "deployment-id", 9, "hgr-"),
    reconcileIntervalS: int(env, "HANGAR_RECONCILE_INTERVAL_S", 60, 1),
    agentReconnectS: int(env, "HANGAR_AGENT_RECONNECT_S", 900, 1),
    instanceMaxLifetimeS: int(env, "HANGAR_INSTANCE_MAX_LIFETIME_S", 0, 0),
    maxUploadBytes: int(env, "HANGAR_MAX_UPLOAD_BYTES", 512 * 1024 * 1024, 1),
    signedUrlTtlS: int(env, "HANGAR_SIGNED_URL_TTL_S", 3600, 1),
    leaseS: int(env, "HANGAR_LEASE_S", 30, 1),
    heartbeatS: int(env, "HANGAR_HEARTBEAT_S", 5, 1),
    idleTimeoutS: int(env, "HANGAR_IDLE_TIMEOUT_S", 60, 0),
    defaultTimeoutS: int(env, "HANGAR_DEFAULT_TIMEOUT_S", 6 * 3600, 1),
    schedulerIntervalMs: int(env, "HANGAR_SCHEDULER_INTERVAL_MS", 500, 10),
    shutdownGraceS: int(env, "HANGAR_SHUTDOWN_GRACE_S", 30, 0),
    localMaxInstances: int(env, "HANGAR_LOCAL_MAX_INSTANCES", 2, 1),
    cloudMaxInstances: int(env, "HANGAR_CLOUD_MAX_INSTANCES", 8, 1),
    instanceImage: env.HANGAR_INSTANCE_IMAGE || "nikolaik/python-nodejs:python3.12-nodejs24",
    instanceDiskGb: int(env, "HANGAR_INSTANCE_DISK_GB", 40, 1),
    preferSpot: env.HANGAR_SPOT === "1" || env.HANGAR_SPOT === "true",
    describeIntervalS: int(env, "HANGAR_DESCRIBE_INTERVAL_S", 15, 1),
    provisioningStrategy: strategy(env.HANGAR_PROVISIONING_STRATEGY),
    raceWidth: int(env, "HANGAR_RACE_WIDTH", 3, 2),
    bootTimeoutS: perProvider(env, "HANGAR_BOOT_TIMEOUT_S"),
    warmPools: parseWarmPools(env.HANGAR_WARM_POOL),
    maxBatchLigands: int(env, "HANGAR_MAX_BATCH_LIGANDS", 100_000, 1),
    defaultMaxConcurrent: int(env, "HANGAR_BATCH_MAX_CONCURRENT", 64, 1),
    batchSyncCheckLimit: int(env, "HANGAR_BATCH_SYNC_CHECK_LIMIT", 5_000, 0),
    batchArtifactsRefreshS: int(env, "HANGAR_BATCH_ARTIFACTS_REFRESH_S", 30, 1),
    offersCacheS: int(env, "HANGAR_OFFERS_CACHE_S", 30, 0),
    marketSnapshotS: int(env, "HANGAR_MARKET_SNAPSHOT_S", 900, 0),
    machinePolicy: {
      minAttempts: int(env, "HANGAR_MACHINE_MIN_ATTEMPTS", 3, 1),
      minSuccessRate: fraction(env, "HANGAR_MACHINE_MIN_SUCCESS_RATE", 0.3),
      skipMs: int(env, "HANGAR_MACHINE_SKIP_HOURS", 24, 0) * 3600_000,
    },
    python: env.HANGAR_PYTHON ?? "/usr/bin/python3",
    logLevel: env.HANGAR_LOG_LEVEL ?? "info",
    blobStore: blobStoreSettings(env),
    adminEmail: (env.HANGAR_ADMIN_EMAIL || "admin@localhost").toLowerCase(),
    adminPassword: env.HANGAR_ADMIN_PASSWORD || undefined,
    accessTokenTtlS: int(env, "HANGAR_ACCESS_TOKEN_TTL_S", 900, 1),
    refreshTokenTtlS: int(env, "HANGAR_REFRESH_TOKEN_TTL_S", 30 * 86_400, 1),
    priceMarkupPercent: decimal(env, "HANGAR_PRICE_MARKUP_PERCENT", 0),
    localPrices: localPrices(env.HANGAR_LOCAL_PRICE_PER_HOUR),
    rateLimitPerMinute: int(env, "HANGAR_RATE_LIMIT_PER_MINUTE", 1200, 0),
    orgRateLimitPerMinute: int(env, "HANGAR_ORG_RATE_LIMIT_PER_MINUTE", 6000, 0),
    apiKeyCacheS: int(env, "HANGAR_API_KEY_CACHE_S", 5, 0),
    creditChecks: creditChecks(env.HANGAR_CREDIT_CHECKS),
    loginRateLimitPerMinute: int(env, "HANGAR_LOGIN_RATE_LIMIT_PER_MINUTE", 30, 0),
    fairShare: env.HANGAR_FAIR_SHARE !== "0" && env.HANGAR_FAIR_SHARE !== "false",
    billingIntervalS: int(env, "HANGAR_BILLING_INTERVAL_S", 5, 1),
    ...overrides,
  };
}
