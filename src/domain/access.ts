/**
 * Who may do what. A request acts for one user in one org: its role there bounds what it can do,
 * and an API key's scopes bound it further (a key never does more than its user could).
 */
export const ROLES = ["owner", "admin", "member", "viewer"] as const;
export type Role = (typeof ROLES)[number];

export const SCOPES = ["read", "write", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

export type Action =
  /** See the org's runs, batches, datasets, usage, balance. */
  | "read"
  /** Submit and cancel work, upload files, manage one's own API keys. */
  | "write"
  /** Manage members, invitations, others' keys, budgets, limits and cloud credentials. */
  | "manage";

export interface Principal {
  userId: string;
  orgId: string;
  role: Role;
  /** Scopes of the API key used; all of them for a signed-in session. */
  scopes: readonly Scope[];
  platformAdmin: boolean;
  /** The API key used, if any (rate limits count per key). */
  keyId: string | null;
}

const ROLE_ALLOWS: Record<Role, readonly Action[]> = {
  owner: ["read", "write", "manage"],
  admin: ["read", "write", "manage"],
  member: ["read", "write"],
  viewer: ["read"],
};

const SCOPE_FOR: Record<Action, Scope> = { read: "read", write: "write", manage: "admin" };

/** Null when allowed, otherwise why not (a 403's message). */
export function denial(principal: Principal, action: Action): string | null {
  if (!principal.scopes.includes(SCOPE_FOR[action])) {
    return `This API key lacks the "${SCOPE_FOR[action]}" scope`;
  }
  if (principal.platformAdmin) return null;
  if (!ROLE_ALLOWS[principal.role].includes(action)) {
    return `A ${principal.role} of this organization cannot ${action === "manage" ? "manage it" : action}`;
  }
  return null;
}

/** An admin hands out at most its own role; only an owner makes owners. */
export function canAssignRole(assigner: Principal, role: Role): boolean {
  if (assigner.platformAdmin) return true;
  if (role === "owner") return assigner.role === "owner";
  return assigner.role === "owner" || assigner.role === "admin";
}

/** Scopes a new key may carry: those of the key that creates it, never more. */
export function grantableScopes(creator: Principal, requested: readonly Scope[]): Scope[] | null {
  const allowed = requested.filter((scope) => creator.scopes.includes(scope));
  return allowed.length === requested.length ? [...requested] : null;
}
