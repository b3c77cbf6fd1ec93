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
  userId: string,
  configured: string | undefined,
  now: number,
): Promise<{ created: boolean; key: string | null }> {
  if (configured) {
    const existing = await store.accounts.findApiKeyByHash(hashSecret(configured), now);
    if (existing) return { created: false, key: configured };
  } else if ((await store.accounts.countApiKeys()) > 0) {
    return { created: false, key: null };
  }
  const key = configured ?? generateSecret(API_KEY_PREFIX);
  await store.accounts.insertApiKey({
    id: newId("key"),
    orgId,
    userId,
    name: "bootstrap admin",
    prefix: key.slice(0, API_KEY_PREFIX.length + 6),
    scopes: ["read", "write", "admin"],
    createdAt: now,
    expiresAt: null,
    revokedAt: null,
    hash: hashSecret(key),
  });
  return { created: true, key };
}
