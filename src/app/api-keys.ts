import { createHash, randomBytes } from "node:crypto";
import { newId } from "../domain/ids.ts";
import type { Store } from "../store/store.ts";

export const API_KEY_PREFIX = "hgr_";

export const hashSecret = (secret: string): string => createHash("sha256").update(secret).digest("hex");

export function generateSecret(prefix: string): string {
  return `${prefix}${randomBytes(24).toString("base64url")}`;
}

/**
 * The embedded default's first start creates one admin key: HANGAR_BOOTSTRAP_API_KEY when set,
 * otherwise a generated one. Only its hash is stored; the caller shows a generated key once.
 */
export async function ensureBootstrapKey(
  store: Store,
  orgId: string,
  configured: string | undefined,
  now: number,
): Promise<{ created: boolean; key: string | null }> {
  if (configured) {
    const existing = await store.findApiKeyByHash(hashSecret(configured));
    if (existing) return { created: false, key: configured };
  } else if ((await store.countApiKeys()) > 0) {
    return { created: false, key: null };
  }
  const key = configured ?? generateSecret(API_KEY_PREFIX);
  await store.insertApiKey({
    id: newId("key"),
    orgId,
    name: "bootstrap admin",
    prefix: key.slice(0, API_KEY_PREFIX.length + 6),
    scopes: ["read", "write", "admin"],
    createdAt: now,
    hash: hashSecret(key),
  });
  return { created: true, key };
}
