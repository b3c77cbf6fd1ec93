import type { Kysely, Selectable } from "kysely";
import type { Role, Scope } from "../domain/access.ts";
import { conflict } from "../domain/errors.ts";
import type {
  AccountStore,
  ApiKeyRecord,
  InvitationRecord,
  KeyPrincipal,
  MembershipRecord,
  OrgLimits,
  OrgRecord,
  RefreshTokenRecord,
  UserRecord,
} from "./accounts.ts";
import type { Database } from "./schema.ts";

const toOrg = (row: Selectable<Database["orgs"]>): OrgRecord => ({
  id: row.id,
  name: row.name,
  createdAt: row.created_at,
  defaultPriority: row.default_priority,
  maxRunningJobs: row.max_running_jobs,
  maxGpus: row.max_gpus,
  maxInstances: row.max_instances,
});

const toUser = (row: Selectable<Database["users"]>): UserRecord => ({
  id: row.id,
  email: row.email,
  name: row.name,
  platformAdmin: row.platform_admin === 1,
  createdAt: row.created_at,
});

const toKey = (row: Selectable<Database["api_keys"]>): ApiKeyRecord => ({
  id: row.id,
  orgId: row.org_id,
  userId: row.user_id ?? "",
  name: row.name,
  prefix: row.prefix,
  scopes: row.scopes.split(",").filter(Boolean) as Scope[],
  createdAt: row.created_at,
  expiresAt: row.expires_at,
  revokedAt: row.revoked_at,
});

const toInvitation = (row: Selectable<Database["invitations"]>): InvitationRecord => ({
  id: row.id,
  orgId: row.org_id,
  email: row.email,
  role: row.role as Role,
  createdBy: row.created_by,
  createdAt: row.created_at,
  expiresAt: row.expires_at,
  acceptedAt: row.accepted_at,
});

const isUniqueViolation = (error: unknown) =>
  error instanceof Error && /unique|duplicate key/i.test(error.message);

export class KyselyAccounts implements AccountStore {
  readonly #db: Kysely<Database>;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async ensureOrg(id: string, name: string, now: number): Promise<void> {
    await this.#db
      .insertInto("orgs")
      .values({ id, name, created_at: now })
      .onConflict((oc) => oc.column("id").doNothing())
      .execute();
  }

  async createOrg(org: { id: string; name: string; createdAt: number }, ownerId: string): Promise<OrgRecord> {
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx
        .insertInto("orgs")
        .values({ id: org.id, name: org.name, created_at: org.createdAt })
        .returningAll()
        .executeTakeFirstOrThrow();
      await trx
        .insertInto("memberships")
        .values({ org_id: org.id, user_id: ownerId, role: "owner", created_at: org.createdAt })
        .execute();
      return toOrg(row);
    });
  }

  async getOrg(id: string): Promise<OrgRecord | null> {
    const row = await this.#db.selectFrom("orgs").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? toOrg(row) : null;
  }

  async setOrgLimits(id: string, limits: Partial<OrgLimits>): Promise<OrgRecord | null> {
    // Nothing to change is not an UPDATE (SQL has no empty SET): it answers the org as it is.
    if (Object.values(limits).every((value) => value === undefined)) return this.getOrg(id);
    const row = await this.#db
      .updateTable("orgs")
      .set({
        ...(limits.defaultPriority !== undefined ? { default_priority: limits.defaultPriority } : {}),
        ...(limits.maxRunningJobs !== undefined ? { max_running_jobs: limits.maxRunningJobs } : {}),
        ...(limits.maxGpus !== undefined ? { max_gpus: limits.maxGpus } : {}),
        ...(limits.maxInstances !== undefined ? { max_instances: limits.maxInstances } : {}),
      })
      .where("id", "=", id)
      .returningAll()
      .executeTakeFirst();
    return row ? toOrg(row) : null;
  }

  async listMemberships(userId: string): Promise<(MembershipRecord & { orgName: string })[]> {
    const rows = await this.#db
      .selectFrom("memberships")
      .innerJoin("orgs", "orgs.id", "memberships.org_id")
      .select(["memberships.org_id", "memberships.role", "memberships.created_at", "orgs.name"])
      .where("memberships.user_id", "=", userId)
      .orderBy("memberships.created_at")
      .execute();
    return rows.map((row) => ({
      orgId: row.org_id,
      userId,
      role: row.role as Role,
      createdAt: row.created_at,
      orgName: row.name,
    }));
  }

  async insertUser(user: UserRecord & { passwordHash: string | null }): Promise<void> {
    try {
      await this.#db
        .insertInto("users")
        .values({
          id: user.id,
          email: user.email,
          name: user.name,
          password_hash: user.passwordHash,
          platform_admin: user.platformAdmin ? 1 : 0,
          created_at: user.createdAt,
        })
        .execute();
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict("email_taken", `A user with email ${user.email} exists`);
      throw error;
    }
  }

  async getUser(id: string): Promise<UserRecord | null> {
    const row = await this.#db.selectFrom("users").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? toUser(row) : null;
  }

  async findUserByEmail(email: string): Promise<(UserRecord & { passwordHash: string | null }) | null> {
    const row = await this.#db
      .selectFrom("users")
      .selectAll()
      .where("email", "=", email.toLowerCase())
      .executeTakeFirst();
    return row ? { ...toUser(row), passwordHash: row.password_hash } : null;
  }

  async setPassword(userId: string, passwordHash: string): Promise<void> {
    await this.#db
      .updateTable("users")
      .set({ password_hash: passwordHash })
      .where("id", "=", userId)
      .execute();
  }

  async putMembership(membership: MembershipRecord): Promise<void> {
    await this.#db
      .insertInto("memberships")
      .values({
        org_id: membership.orgId,
        user_id: membership.userId,
        role: membership.role,
        created_at: membership.createdAt,
      })
      .onConflict((oc) => oc.columns(["org_id", "user_id"]).doUpdateSet({ role: membership.role }))
      .execute();
  }

  async getMembership(orgId: string, userId: string): Promise<MembershipRecord | null> {
    const row = await this.#db
      .selectFrom("memberships")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("user_id", "=", userId)
      .executeTakeFirst();
    return row ? { orgId, userId, role: row.role as Role, createdAt: row.created_at } : null;
  }

  async listMembers(orgId: string): Promise<(MembershipRecord & { email: string; name: string })[]> {
    const rows = await this.#db
      .selectFrom("memberships")
      .innerJoin("users", "users.id", "memberships.user_id")
      .select([
        "memberships.user_id",
        "memberships.role",
        "memberships.created_at",
        "users.email",
        "users.name",
      ])
      .where("memberships.org_id", "=", orgId)
      .orderBy("memberships.created_at")
      .execute();
    return rows.map((row) => ({
      orgId,
      userId: row.user_id,
      role: row.role as Role,
      createdAt: row.created_at,
      email: row.email,
      name: row.name,
    }));
  }

  async removeMembership(orgId: string, userId: string, now: number): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      const removed = await trx
        .deleteFrom("memberships")
        .where("org_id", "=", orgId)
        .where("user_id", "=", userId)
        .executeTakeFirst();
      await trx
        .updateTable("api_keys")
        .set({ revoked_at: now })
        .where("org_id", "=", orgId)
        .where("user_id", "=", userId)
        .where("revoked_at", "is", null)
        .execute();
      await trx
        .updateTable("refresh_tokens")
        .set({ revoked_at: now })
        .where("org_id", "=", orgId)
        .where("user_id", "=", userId)
        .where("revoked_at", "is", null)
        .execute();
      return Number(removed.numDeletedRows) > 0;
    });
  }

  async countApiKeys(): Promise<number> {
    const row = await this.#db
      .selectFrom("api_keys")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async insertApiKey(key: ApiKeyRecord & { hash: string }): Promise<void> {
    await this.#db
      .insertInto("api_keys")
      .values({
        id: key.id,
        org_id: key.orgId,
        user_id: key.userId,
        name: key.name,
        prefix: key.prefix,
        key_hash: key.hash,
        scopes: key.scopes.join(","),
        created_at: key.createdAt,
        expires_at: key.expiresAt,
        revoked_at: key.revokedAt,
      })
      .execute();
  }

  async adoptOwnerlessKeys(userId: string): Promise<void> {
    await this.#db.updateTable("api_keys").set({ user_id: userId }).where("user_id", "is", null).execute();
  }

  async findPrincipal(orgId: string, userId: string): Promise<{ role: Role; platformAdmin: boolean } | null> {
    const row = await this.#db
      .selectFrom("memberships")
      .innerJoin("users", "users.id", "memberships.user_id")
      .select(["memberships.role", "users.platform_admin"])
      .where("memberships.org_id", "=", orgId)
      .where("memberships.user_id", "=", userId)
      .executeTakeFirst();
    return row ? { role: row.role as Role, platformAdmin: row.platform_admin === 1 } : null;
  }

  async findKeyPrincipal(hash: string, now: number): Promise<KeyPrincipal | null> {
    // One query per request: the key, and its user's current role in the key's org.
    const row = await this.#db
      .selectFrom("api_keys")
      .innerJoin("memberships", (join) =>
        join
          .onRef("memberships.org_id", "=", "api_keys.org_id")
          .onRef("memberships.user_id", "=", "api_keys.user_id"),
      )
      .innerJoin("users", "users.id", "api_keys.user_id")
      .select([
        "api_keys.id",
        "api_keys.org_id",
        "api_keys.user_id",
        "api_keys.scopes",
        "api_keys.expires_at",
        "memberships.role",
        "users.platform_admin",
      ])
      .where("api_keys.key_hash", "=", hash)
      .where("api_keys.revoked_at", "is", null)
      .where((eb) => eb.or([eb("api_keys.expires_at", "is", null), eb("api_keys.expires_at", ">", now)]))
      .executeTakeFirst();
    if (!row) return null;
    return {
      keyId: row.id,
      orgId: row.org_id,
      userId: row.user_id!,
      scopes: row.scopes.split(",").filter(Boolean) as Scope[],
      role: row.role as Role,
      platformAdmin: row.platform_admin === 1,
      expiresAt: row.expires_at,
    };
  }

  async findApiKeyByHash(hash: string, now: number): Promise<ApiKeyRecord | null> {
    const row = await this.#db
      .selectFrom("api_keys")
      .selectAll()
      .where("key_hash", "=", hash)
      .where("revoked_at", "is", null)
      .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
      .executeTakeFirst();
    return row ? toKey(row) : null;
  }

  async listApiKeys(orgId: string, userId?: string): Promise<ApiKeyRecord[]> {
    const rows = await this.#db
      .selectFrom("api_keys")
      .selectAll()
      .where("org_id", "=", orgId)
      .$if(userId !== undefined, (q) => q.where("user_id", "=", userId!))
      .orderBy("created_at")
      .execute();
    return rows.map((row) => toKey(row));
  }

  async getApiKey(orgId: string, id: string): Promise<ApiKeyRecord | null> {
    const row = await this.#db
      .selectFrom("api_keys")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? toKey(row) : null;
  }

  async revokeApiKey(orgId: string, id: string, now: number): Promise<ApiKeyRecord | null> {
    await this.#db
      .updateTable("api_keys")
      .set({ revoked_at: now })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .where("revoked_at", "is", null)
      .execute();
    return this.getApiKey(orgId, id);
  }

  async insertRefreshToken(token: RefreshTokenRecord & { hash: string }): Promise<void> {
    await this.#db
      .insertInto("refresh_tokens")
      .values({
        id: token.id,
        user_id: token.userId,
        org_id: token.orgId,
        token_hash: token.hash,
        created_at: token.createdAt,
        expires_at: token.expiresAt,
        revoked_at: token.revokedAt,
      })
      .execute();
  }

  async consumeRefreshToken(hash: string, now: number): Promise<RefreshTokenRecord | null> {
    // One conditional UPDATE: of two concurrent uses of one token, exactly one gets it.
    const row = await this.#db
      .updateTable("refresh_tokens")
      .set({ revoked_at: now })
      .where("token_hash", "=", hash)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", now)
      .returningAll()
      .executeTakeFirst();
    if (!row) return null;
    return {
      id: row.id,
      userId: row.user_id,
      orgId: row.org_id,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      revokedAt: row.revoked_at,
    };
  }

  async insertInvitation(invitation: InvitationRecord & { hash: string }): Promise<void> {
    await this.#db
      .insertInto("invitations")
      .values({
        id: invitation.id,
        org_id: invitation.orgId,
        email: invitation.email,
        role: invitation.role,
        token_hash: invitation.hash,
        created_by: invitation.createdBy,
        created_at: invitation.createdAt,
        expires_at: invitation.expiresAt,
        accepted_at: invitation.acceptedAt,
      })
      .execute();
  }

  async acceptInvitation(hash: string, now: number): Promise<InvitationRecord | null> {
    const row = await this.#db
      .updateTable("invitations")
      .set({ accepted_at: now })
      .where("token_hash", "=", hash)
      .where("accepted_at", "is", null)
      .where("expires_at", ">", now)
      .returningAll()
      .executeTakeFirst();
    return row ? toInvitation(row) : null;
  }
}
