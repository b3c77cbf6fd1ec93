import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { badRequest, notFound } from "../domain/errors.ts";
import type { ComputeProvider } from "../providers/provider.ts";
import { runpodFromEnv } from "../providers/runpod/index.ts";
import { tensordockFromEnv } from "../providers/tensordock/index.ts";
import { vastFromEnv } from "../providers/vastai/index.ts";
import type { SealedCredential } from "../store/store.ts";
import type { AppContext } from "./context.ts";
import { OfferBook } from "./offers.ts";

/**
 * The clouds whose credentials an org may store, and the settings they stand for: a stored
 * credential takes the place of the environment's for that org.
 */
export const CREDENTIAL_SETTINGS = {
  runpod: { key: "RUNPOD_API_KEY", url: "RUNPOD_GRAPHQL_URL" },
  vastai: { key: "VAST_API_KEY", url: "VAST_API_URL" },
  tensordock: { key: "TENSORDOCK_API_TOKEN", url: "TENSORDOCK_API_URL" },
} as const;

export type CredentialProvider = keyof typeof CREDENTIAL_SETTINGS;

export const isCredentialProvider = (name: string): name is CredentialProvider =>
  Object.hasOwn(CREDENTIAL_SETTINGS, name);

/** What an org stores for one cloud: its API key and, optionally, another endpoint (a proxy, an emulator). */
export interface ProviderCredential {
  apiKey: string;
  apiUrl: string | null;
}

/**
 * Seals credentials with AES-256-GCM under the deployment's credentials key. The org and provider
 * are the authenticated data, so a sealed value copied to another org's row or provider does not
 * open. Hand-written on node:crypto: one cipher call each way needs no library.
 */
export class CredentialVault {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32)
      throw new Error("the credentials key must be 32 bytes (HANGAR_CREDENTIALS_KEY, base64)");
    this.#key = key;
  }

  seal(orgId: string, provider: string, credential: ProviderCredential): Omit<SealedCredential, "updatedAt"> {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#key, iv);
    cipher.setAAD(Buffer.from(`${orgId}/${provider}`));
    const plaintext = Buffer.from(JSON.stringify(credential));
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return {
      orgId,
      provider,
      ciphertext: ciphertext.toString("base64"),
      iv: iv.toString("base64"),
      tag: cipher.getAuthTag().toString("base64"),
      keyHint: credential.apiKey.slice(-4),
    };
  }

  open(sealed: SealedCredential): ProviderCredential {
    const decipher = createDecipheriv("aes-256-gcm", this.#key, Buffer.from(sealed.iv, "base64"));
    decipher.setAAD(Buffer.from(`${sealed.orgId}/${sealed.provider}`));
    decipher.setAuthTag(Buffer.from(sealed.tag, "base64"));
    const plaintext = Buffer.concat([
      decipher.update(Buffer.from(sealed.ciphertext, "base64")),
      decipher.final(),
    ]);
    return JSON.parse(plaintext.toString("utf8")) as ProviderCredential;
  }
}

/** Checks a credential as given, before anything is stored. */
export function validCredential(provider: string, body: { api_key: string; api_url?: string | null }) {
  if (!isCredentialProvider(provider)) {
    throw notFound(
      "unknown_provider",
      `"${provider}" takes no stored credentials; these do: ${Object.keys(CREDENTIAL_SETTINGS).join(", ")}`,
    );
  }
  const apiKey = body.api_key.trim();
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (apiKey === "" || /[\s\u0000-\u001f\u007f]/.test(apiKey)) {
    throw badRequest(
      "invalid_credential",
      `The ${provider} API key is empty or holds spaces or control characters`,
    );
  }
  let apiUrl: string | null = null;
  if (body.api_url) {
    const url = URL.canParse(body.api_url) ? new URL(body.api_url) : null;
    if (!url || !["https:", "http:"].includes(url.protocol)) {
      throw badRequest("invalid_credential", `api_url must be an http(s) URL, not "${body.api_url}"`);
    }
    apiUrl = url.toString().replace(/\/$/, "");
  }
  return { provider, credential: { apiKey, apiUrl } };
}

/**
 * The clouds in use: the environment's settings, with the org's stored credentials in place of them
 * provider by provider. `refresh` rebuilds them when the stored credentials changed (this server's
 * own change at once; another replica's on its next refresh) and puts them in the context: the
 * providers the scheduler launches on and the offer book the API quotes from. Providers not built
 * from credentials (this host, sim) stay as they are.
 */
export class CloudCredentials {
  readonly vault: CredentialVault;
  #applied: string | null = null;

  constructor(vault: CredentialVault) {
    this.vault = vault;
  }

  /** Whether the clouds were rebuilt. */
  async refresh(ctx: AppContext): Promise<boolean> {
    const stored = await ctx.store.listCredentials(ctx.defaultOrgId);
    const fingerprint = stored.map((c) => `${c.provider}@${c.updatedAt}`).join(",");
    if (fingerprint === this.#applied) return false;
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const sealed of stored) {
      if (!isCredentialProvider(sealed.provider)) continue;
      const settings = CREDENTIAL_SETTINGS[sealed.provider];
      const credential = this.vault.open(sealed);
      env[settings.key] = credential.apiKey;
      if (credential.apiUrl) env[settings.url] = credential.apiUrl;
      else delete env[settings.url];
    }
    const options = { maxInstances: ctx.config.cloudMaxInstances };
    const clouds: ComputeProvider[] = [
      runpodFromEnv(env, options),
      vastFromEnv(env, options),
      tensordockFromEnv(env, options),
    ].filter((provider) => provider !== null);
    const others = ctx.providers.filter((p) => !isCredentialProvider(p.name));
    ctx.providers = [
      ...others.filter((p) => !p.capabilities.launchesOffers),
      ...clouds,
      ...others.filter((p) => p.capabilities.launchesOffers),
    ];
    ctx.offers = new OfferBook(ctx.providers, { ttlMs: ctx.config.offersCacheS * 1000, now: ctx.now });
    this.#applied = fingerprint;
    return true;
  }
}
