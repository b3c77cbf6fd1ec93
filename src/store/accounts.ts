import type { Role, Scope } from "../domain/access.ts";
import type { Budget } from "../domain/budget.ts";
import type { Balances, LedgerEntry, NewLedgerEntry } from "../domain/ledger.ts";
import type { UsageRecord } from "../domain/usage.ts";

export interface OrgRecord {
  id: string;
  name: string;
  createdAt: number;
  defaultPriority: number;
  /** Most of its jobs running at once; null: no limit. */
  maxRunningJobs: number | null;
  /** Most GPUs its running jobs hold at once; null: no limit. */
  maxGpus: number | null;
  /** Most instances its running jobs occupy at once; null: no limit. */
  maxInstances: number | null;
}

export interface UserRecord {
  id: string;
  email: string;
  name: string;
  platformAdmin: boolean;
  createdAt: number;
}

export interface MembershipRecord {
  orgId: string;
  userId: string;
  role: Role;
  createdAt: number;
}

export interface ApiKeyRecord {
  id: string;
  orgId: string;
  /** The user the key acts for. */
  userId: string;
  name: string;
  prefix: string;
  scopes: Scope[];
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

export interface RefreshTokenRecord {
  id: string;
  userId: string;
  orgId: string;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export interface InvitationRecord {
  id: string;
  orgId: string;
  email: string;
  role: Role;
  createdBy: string;
  createdAt: number;
  expiresAt: number;
  acceptedAt: number | null;
}

export interface KeyPrincipal {
  keyId: string;
  orgId: string;
  userId: string;
  scopes: Scope[];
  role: Role;
  platformAdmin: boolean;
  /** When the key stops working; null: never. */
  expiresAt: number | null;
}

export type OrgLimits = Pick<OrgRecord, "defaultPriority" | "maxRunningJobs" | "maxGpus" | "maxInstances">;

/** Identity: users, orgs, memberships, API keys, sessions and invitations. Secrets only as hashes. */
export interface AccountStore {
  ensureOrg(id: string, name: string, now: number): Promise<void>;
  /** A new org with its first owner, in one transaction. */
  createOrg(org: { id: string; name: string; createdAt: number }, ownerId: string): Promise<OrgRecord>;
  getOrg(id: string): Promise<OrgRecord | null>;
  setOrgLimits(id: string, limits: Partial<OrgLimits>): Promise<OrgRecord | null>;
  /** The orgs a user belongs to, with its role in each. */
  listMemberships(userId: string): Promise<(MembershipRecord & { orgName: string })[]>;

  /** Fails with a conflict when the email is taken. */
  insertUser(user: UserRecord & { passwordHash: string | null }): Promise<void>;
  getUser(id: string): Promise<UserRecord | null>;
  findUserByEmail(email: string): Promise<(UserRecord & { passwordHash: string | null }) | null>;
  setPassword(userId: string, passwordHash: string): Promise<void>;

  /** Adds the user to the org, or changes its role there. */
  putMembership(membership: MembershipRecord): Promise<void>;
  getMembership(orgId: string, userId: string): Promise<MembershipRecord | null>;
  listMembers(orgId: string): Promise<(MembershipRecord & { email: string; name: string })[]>;
  /** Whether there was one; the user's keys and sessions in that org are revoked with it. */
  removeMembership(orgId: string, userId: string, now: number): Promise<boolean>;

  countApiKeys(): Promise<number>;
  /** Keys made before users existed become this user's (the deployment's first admin). */
  adoptOwnerlessKeys(userId: string): Promise<void>;
  /** The active key with this hash and its user's role in the key's org, in one query. */
  findKeyPrincipal(hash: string, now: number): Promise<KeyPrincipal | null>;
  /** A user's role in an org (null when not a member) and its platform-admin flag. */
  findPrincipal(orgId: string, userId: string): Promise<{ role: Role; platformAdmin: boolean } | null>;
  insertApiKey(key: ApiKeyRecord & { hash: string }): Promise<void>;
  /** An active key: not revoked and not expired at `now`. */
  findApiKeyByHash(hash: string, now: number): Promise<ApiKeyRecord | null>;
  listApiKeys(orgId: string, userId?: string): Promise<ApiKeyRecord[]>;
  getApiKey(orgId: string, id: string): Promise<ApiKeyRecord | null>;
  /** Null when the org has no such key; revoking twice keeps the first time. */
  revokeApiKey(orgId: string, id: string, now: number): Promise<ApiKeyRecord | null>;

  insertRefreshToken(token: RefreshTokenRecord & { hash: string }): Promise<void>;
  /** Revokes an active token and returns it, once: a token is used a single time. */
  consumeRefreshToken(hash: string, now: number): Promise<RefreshTokenRecord | null>;

  insertInvitation(invitation: InvitationRecord & { hash: string }): Promise<void>;
  /** Marks an open, unexpired invitation accepted and returns it, once. */
  acceptInvitation(hash: string, now: number): Promise<InvitationRecord | null>;
}

export interface UsageQuery {
  orgId: string;
  from: number;
  to: number;
  groupBy: "user" | "model" | "gpu_type" | "provider" | "day";
}

export interface UsageRow {
  /** The user id, model, GPU type, provider, or day (YYYY-MM-DD); "" where none applies. */
  group: string;
  attempts: number;
  busyMs: number;
  costMicro: number;
}

/** An open hold: set aside at submit for a run or batch and not settled yet. */
export interface OpenHold {
  orgId: string;
  subject: string;
  userId: string | null;
  createdAt: number;
}

/** Credits: the double-entry ledger (domain/ledger.ts), usage records and budgets. */
export interface LedgerStore {
  /** Writes the entries that are new (by key) in one transaction; returns how many were new. */
  post(entries: readonly NewLedgerEntry[], now: number): Promise<number>;
  /**
   * Writes a hold only if the org's available balance covers it, deciding under the org's lock so
   * concurrent submits cannot both spend the same credits. Returns the balances it decided on.
   */
  postHoldIfCovered(hold: NewLedgerEntry, now: number): Promise<{ posted: boolean; balances: Balances }>;
  balances(orgId: string): Promise<Balances>;
  /** Newest first. */
  listEntries(orgId: string, limit: number): Promise<LedgerEntry[]>;
  /** What a subject's hold still has: its holds less its charges and releases. */
  heldFor(orgId: string, subject: string): Promise<number>;
  openHolds(limit: number): Promise<OpenHold[]>;
  /** Sum of charges less refunds since `since` (the org's, or one user's). */
  spentSince(orgId: string, since: number, userId?: string): Promise<number>;
  usage(query: UsageQuery): Promise<UsageRow[]>;
  /** Usage records of one job (its attempts), oldest first. */
  usageOfJob(orgId: string, jobId: string): Promise<UsageRecord[]>;
  /** Ended instances whose unused time has not been billed yet. */
  instancesToBill(limit: number): Promise<InstanceToBill[]>;
  markInstanceBilled(id: string, entry: NewLedgerEntry | null, now: number): Promise<void>;

  putBudget(budget: Budget, now: number): Promise<void>;
  listBudgets(orgId?: string): Promise<Budget[]>;
  deleteBudget(orgId: string, userId: string | null): Promise<boolean>;
  /** True when this threshold's event is new for the month (each is raised once). */
  recordBudgetEvent(event: BudgetEvent): Promise<boolean>;
  listBudgetEvents(orgId: string, limit: number): Promise<BudgetEvent[]>;
}

export interface BudgetEvent {
  orgId: string;
  userId: string | null;
  month: string;
  threshold: number;
  spentMicro: number;
  limitMicro: number;
  createdAt: number;
}

export interface InstanceToBill {
  id: string;
  orgId: string;
  /** As the provider reported it at launch, in currency units per hour. */
  pricePerHour: number | null;
  lifetimeMs: number;
  /** What its runs' attempts were charged. */
  usedMicro: number;
}
