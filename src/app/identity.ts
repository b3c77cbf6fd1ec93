import { createHmac, randomBytes, scrypt as scryptCallback, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import {
  type Action,
  canAssignRole,
  denial,
  grantableScopes,
  type Principal,
  type Role,
  SCOPES,
  type Scope,
} from "../domain/access.ts";
import { badRequest, conflict, forbidden, HangarError, notFound, unauthorized } from "../domain/errors.ts";
import { newId } from "../domain/ids.ts";
import type { ApiKeyRecord, InvitationRecord, OrgRecord } from "../store/accounts.ts";
import { API_KEY_PREFIX, generateSecret, hashSecret } from "./api-keys.ts";
import type { AppContext } from "./context.ts";

const scrypt = promisify(scryptCallback) as (
  password: string,
  salt: Buffer,
  length: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

/** scrypt with OWASP's minimum cost (N=2^17, r=8, p=1), stored with its parameters. */
const SCRYPT = { N: 131_072, r: 8, p: 1, maxmem: 256 * 1024 * 1024 };
const KEY_LENGTH = 32;

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, KEY_LENGTH, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString("base64url")}$${hash.toString("base64url")}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64url");
  const actual = await scrypt(password, Buffer.from(salt, "base64url"), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  });
  return timingSafeEqual(actual, expected);
}

export const ADMIN_USER_ID = "user_admin";
export const MIN_PASSWORD_LENGTH = 10;

/**
 * The deployment's first platform admin owns the default org; the bootstrap key and keys made
 * before users existed act for it. Its password comes from HANGAR_ADMIN_PASSWORD, when set.
 */
export async function ensureAdmin(ctx: AppContext): Promise<void> {
  const { accounts } = ctx.store;
  const now = ctx.now();
  if (!(await accounts.getUser(ADMIN_USER_ID))) {
    await accounts
      .insertUser({
        id: ADMIN_USER_ID,
        email: ctx.config.adminEmail,
        name: "admin",
        platformAdmin: true,
        createdAt: now,
        passwordHash: null,
      })
      .catch(async (error: unknown) => {
        // Replicas starting together: another one made it first.
        if (!(await accounts.getUser(ADMIN_USER_ID))) throw error;
      });
  }
  if (ctx.config.adminPassword) {
    const admin = await accounts.findUserByEmail(ctx.config.adminEmail);
    if (
      admin &&
      !(admin.passwordHash && (await verifyPassword(ctx.config.adminPassword, admin.passwordHash)))
    ) {
      await accounts.setPassword(admin.id, await hashPassword(ctx.config.adminPassword));
    }
  }
  if (!(await accounts.getMembership(ctx.defaultOrgId, ADMIN_USER_ID))) {
    await accounts.putMembership({
      orgId: ctx.defaultOrgId,
      userId: ADMIN_USER_ID,
      role: "owner",
      createdAt: now,
    });
  }
  await accounts.adoptOwnerlessKeys(ADMIN_USER_ID);
}

/** Access tokens (JWT, HS256) for signed-in sessions; the key is derived from the signing secret. */
export class SessionTokens {
  readonly #key: Uint8Array;
  readonly #ttlS: number;

  constructor(signingSecret: string, ttlS: number) {
    this.#key = createHmac("sha256", signingSecret).update("hangar access tokens").digest();
    this.#ttlS = ttlS;
  }

  async issue(userId: string, orgId: string, now: number): Promise<{ token: string; expiresAt: number }> {
    const issuedAt = Math.floor(now / 1000);
    const token = await new SignJWT({ org: orgId })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(userId)
      .setIssuer("hangar")
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + this.#ttlS)
      .sign(this.#key);
    return { token, expiresAt: (issuedAt + this.#ttlS) * 1000 };
  }

  /** The user and org a valid token names; 401 for a tampered, expired or foreign token. */
  async verify(token: string, now: number): Promise<{ userId: string; orgId: string }> {
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        issuer: "hangar",
        algorithms: ["HS256"],
        currentDate: new Date(now),
      });
      if (typeof payload.sub !== "string" || typeof payload.org !== "string") {
        throw unauthorized("Invalid access token");
      }
      return { userId: payload.sub, orgId: payload.org };
    } catch (error) {
      if (error instanceof HangarError) throw error;
      if (error instanceof joseErrors.JWTExpired)
        throw unauthorized("Access token expired: refresh it or sign in again");
      throw unauthorized("Invalid access token");
    }
  }
}

/** Who a bearer token acts for: an API key (hgr_…) or a session's access token. */
export async function authenticate(
  ctx: AppContext,
  tokens: SessionTokens,
  bearer: string | undefined,
): Promise<Principal> {
  if (!bearer)
    throw unauthorized("Missing credentials: send Authorization: Bearer <API key or access token>");
  const now = ctx.now();
  if (bearer.startsWith(API_KEY_PREFIX)) {
    const key = await ctx.keyPrincipals.find(hashSecret(bearer), now, (hash) =>
      ctx.store.accounts.findKeyPrincipal(hash, now),
    );
    if (!key) throw unauthorized("Invalid, expired or revoked API key");
    const { keyId, orgId, userId, scopes, role, platformAdmin } = key;
    return { keyId, orgId, userId, scopes, role, platformAdmin };
  }
  const session = await tokens.verify(bearer, now);
  const member = await ctx.store.accounts.findPrincipal(session.orgId, session.userId);
  if (!member) throw unauthorized("This session's user is no longer a member of its organization");
  return { ...session, ...member, scopes: SCOPES, keyId: null };
}

export function authorize(principal: Principal, action: Action): void {
  const why = denial(principal, action);
  if (why) throw forbidden("forbidden", why);
}

/** Acting on org `orgId` (its members, keys, credits): one's own org, or any for a platform admin. */
export function authorizeOrg(principal: Principal, orgId: string, action: Action): void {
  if (principal.orgId !== orgId && !principal.platformAdmin) {
    // Another org's existence is not disclosed.
    throw notFound("org_not_found", `No organization ${orgId}`);
  }
  authorize(principal, action);
}

export function requirePlatformAdmin(principal: Principal, what: string): void {
  if (!principal.platformAdmin || !principal.scopes.includes("admin")) {
    throw forbidden("platform_admin_required", `Only the deployment's platform admins can ${what}`);
  }
}

export interface SignedIn {
  accessToken: string;
  expiresAt: number;
  refreshToken: string;
  orgId: string;
  userId: string;
}

const invalidLogin = () => unauthorized("Wrong email or password");

export async function login(
  ctx: AppContext,
  tokens: SessionTokens,
  request: { email: string; password: string; org?: string },
): Promise<SignedIn> {
  const user = await ctx.store.accounts.findUserByEmail(request.email);
  // Hash even for an unknown user, so the answer's timing does not tell which emails exist.
  const stored = user?.passwordHash ?? (await hashPassword("not a password of anyone"));
  const valid = await verifyPassword(request.password, stored);
  if (!user?.passwordHash || !valid) throw invalidLogin();
  const memberships = await ctx.store.accounts.listMemberships(user.id);
  const membership = request.org ? memberships.find((m) => m.orgId === request.org) : memberships[0];
  if (!membership) {
    throw forbidden(
      "not_a_member",
      request.org ? `You are not a member of ${request.org}` : "You belong to no organization",
    );
  }
  return startSession(ctx, tokens, user.id, membership.orgId);
}

async function startSession(
  ctx: AppContext,
  tokens: SessionTokens,
  userId: string,
  orgId: string,
): Promise<SignedIn> {
  const now = ctx.now();
  const access = await tokens.issue(userId, orgId, now);
  const refreshToken = generateSecret("hgrt_");
  await ctx.store.accounts.insertRefreshToken({
    id: newId("rt"),
    userId,
    orgId,
    createdAt: now,
    expiresAt: now + ctx.config.refreshTokenTtlS * 1000,
    revokedAt: null,
    hash: hashSecret(refreshToken),
  });
  return { accessToken: access.token, expiresAt: access.expiresAt, refreshToken, orgId, userId };
}

/** A refresh token is used once: it is exchanged for a new access token and a new refresh token. */
export async function refresh(
  ctx: AppContext,
  tokens: SessionTokens,
  refreshToken: string,
): Promise<SignedIn> {
  const used = await ctx.store.accounts.consumeRefreshToken(hashSecret(refreshToken), ctx.now());
  if (!used) throw unauthorized("Invalid, expired or already used refresh token");
  if (!(await ctx.store.accounts.findPrincipal(used.orgId, used.userId))) {
    throw unauthorized("This session's user is no longer a member of its organization");
  }
  return startSession(ctx, tokens, used.userId, used.orgId);
}

export async function logout(ctx: AppContext, refreshToken: string): Promise<void> {
  await ctx.store.accounts.consumeRefreshToken(hashSecret(refreshToken), ctx.now());
}

export async function createOrg(
  ctx: AppContext,
  principal: Principal,
  name: string,
  ownerId?: string,
): Promise<OrgRecord> {
  requirePlatformAdmin(principal, "create organizations");
  const owner = ownerId ?? principal.userId;
  if (!(await ctx.store.accounts.getUser(owner))) throw notFound("user_not_found", `No user ${owner}`);
  return ctx.store.accounts.createOrg({ id: newId("org"), name, createdAt: ctx.now() }, owner);
}

export interface NewApiKey {
  record: ApiKeyRecord;
  /** Shown once; only its hash is kept. */
  secret: string;
}

export async function createApiKey(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
  request: { name: string; scopes?: Scope[]; expiresInDays?: number; userId?: string },
): Promise<NewApiKey> {
  const forUser = request.userId ?? principal.userId;
  // Every member makes keys for itself; keys for others need the manage right.
  authorizeOrg(principal, orgId, forUser === principal.userId ? "read" : "manage");
  const member = await ctx.store.accounts.getMembership(orgId, forUser);
  if (!member) throw notFound("member_not_found", `User ${forUser} is not a member of ${orgId}`);
  // By default a key gets what its user's role can use, read and write at most.
  const fitting = SCOPES.filter(
    (scope) => scope === "read" || (scope === "write" && member.role !== "viewer"),
  );
  const scopes = grantableScopes(
    principal,
    request.scopes ?? fitting.filter((s) => principal.scopes.includes(s)),
  );
  if (!scopes)
    throw forbidden("scope_not_grantable", "A key cannot be given scopes the key that makes it lacks");
  const beyondRole = scopes.find((scope) =>
    denial({ ...principal, role: member.role, scopes: [scope] }, scopeAction[scope]),
  );
  if (beyondRole && !principal.platformAdmin) {
    throw forbidden(
      "scope_not_grantable",
      `A ${member.role} cannot hold a key with the "${beyondRole}" scope`,
    );
  }
  const secret = generateSecret(API_KEY_PREFIX);
  const now = ctx.now();
  const record: ApiKeyRecord = {
    id: newId("key"),
    orgId,
    userId: forUser,
    name: request.name,
    prefix: secret.slice(0, API_KEY_PREFIX.length + 6),
    scopes,
    createdAt: now,
    expiresAt: request.expiresInDays ? now + request.expiresInDays * 86_400_000 : null,
    revokedAt: null,
  };
  await ctx.store.accounts.insertApiKey({ ...record, hash: hashSecret(secret) });
  return { record, secret };
}

const scopeAction: Record<Scope, Action> = { read: "read", write: "write", admin: "manage" };

export async function listApiKeys(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
): Promise<ApiKeyRecord[]> {
  authorizeOrg(principal, orgId, "read");
  const manages = denial(principal, "manage") === null;
  return ctx.store.accounts.listApiKeys(orgId, manages ? undefined : principal.userId);
}

export async function revokeApiKey(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
  keyId: string,
): Promise<ApiKeyRecord> {
  authorizeOrg(principal, orgId, "read");
  const key = await ctx.store.accounts.getApiKey(orgId, keyId);
  if (!key) throw notFound("api_key_not_found", `No API key ${keyId}`);
  if (key.userId !== principal.userId) authorize(principal, "manage");
  const revoked = (await ctx.store.accounts.revokeApiKey(orgId, keyId, ctx.now()))!;
  ctx.keyPrincipals.forgetAll();
  return revoked;
}

export async function addMember(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
  request: { email: string; role: Role },
): Promise<{ userId: string; role: Role }> {
  authorizeOrg(principal, orgId, "manage");
  if (!canAssignRole(principal, request.role)) {
    throw forbidden("role_not_grantable", `A ${principal.role} cannot make ${request.role}s`);
  }
  const user = await ctx.store.accounts.findUserByEmail(request.email);
  if (!user) {
    throw notFound("user_not_found", `No user with email ${request.email}: invite them instead`);
  }
  await ensureOwnerRemains(ctx, orgId, user.id, request.role);
  await ctx.store.accounts.putMembership({
    orgId,
    userId: user.id,
    role: request.role,
    createdAt: ctx.now(),
  });
  // A member's keys carry their role: a demotion holds from the next request.
  ctx.keyPrincipals.forgetAll();
  return { userId: user.id, role: request.role };
}

export async function removeMember(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
  userId: string,
): Promise<void> {
  if (userId !== principal.userId) authorizeOrg(principal, orgId, "manage");
  const member = await ctx.store.accounts.getMembership(orgId, userId);
  if (!member) throw notFound("member_not_found", `User ${userId} is not a member of ${orgId}`);
  if (
    member.role === "owner" &&
    !principal.platformAdmin &&
    principal.role !== "owner" &&
    userId !== principal.userId
  ) {
    throw forbidden("role_not_grantable", "Only an owner can remove an owner");
  }
  await ensureOwnerRemains(ctx, orgId, userId, null);
  await ctx.store.accounts.removeMembership(orgId, userId, ctx.now());
  ctx.keyPrincipals.forgetAll();
}

/** An org always keeps an owner. */
async function ensureOwnerRemains(ctx: AppContext, orgId: string, userId: string, newRole: Role | null) {
  if (newRole === "owner") return;
  const members = await ctx.store.accounts.listMembers(orgId);
  const owners = members.filter((m) => m.role === "owner");
  if (owners.length === 1 && owners[0]!.userId === userId) {
    throw conflict("last_owner", "An organization keeps at least one owner: make another member owner first");
  }
}

export interface NewInvitation {
  record: InvitationRecord;
  /** Shown once, to hand to the invitee. */
  token: string;
}

export async function invite(
  ctx: AppContext,
  principal: Principal,
  orgId: string,
  request: { email: string; role: Role; expiresInDays?: number },
): Promise<NewInvitation> {
  authorizeOrg(principal, orgId, "manage");
  if (!canAssignRole(principal, request.role)) {
    throw forbidden("role_not_grantable", `A ${principal.role} cannot make ${request.role}s`);
  }
  const token = generateSecret("hgri_");
  const now = ctx.now();
  const record: InvitationRecord = {
    id: newId("inv"),
    orgId,
    email: request.email.toLowerCase(),
    role: request.role,
    createdBy: principal.userId,
    createdAt: now,
    expiresAt: now + (request.expiresInDays ?? 7) * 86_400_000,
    acceptedAt: null,
  };
  await ctx.store.accounts.insertInvitation({ ...record, hash: hashSecret(token) });
  return { record, token };
}

/** Joins the invitation's org, creating the user (with this password) when the email is new. */
export async function acceptInvitation(
  ctx: AppContext,
  tokens: SessionTokens,
  request: { token: string; name?: string; password: string },
): Promise<SignedIn> {
  const { accounts } = ctx.store;
  const hash = hashSecret(request.token);
  const invitation = await accounts.acceptInvitation(hash, ctx.now());
  if (!invitation) throw unauthorized("Invalid, expired or already accepted invitation");
  let user = await accounts.findUserByEmail(invitation.email);
  if (!user) {
    if (request.password.length < MIN_PASSWORD_LENGTH) {
      throw badRequest("weak_password", `Choose a password of at least ${MIN_PASSWORD_LENGTH} characters`);
    }
    const id = newId("user");
    await accounts.insertUser({
      id,
      email: invitation.email,
      name: request.name ?? invitation.email.split("@")[0]!,
      platformAdmin: false,
      createdAt: ctx.now(),
      passwordHash: await hashPassword(request.password),
    });
    user = await accounts.findUserByEmail(invitation.email);
  } else if (!user.passwordHash || !(await verifyPassword(request.password, user.passwordHash))) {
    throw unauthorized("This email has an account: give its password to accept");
  }
  await accounts.putMembership({
    orgId: invitation.orgId,
    userId: user!.id,
    role: invitation.role,
    createdAt: ctx.now(),
  });
  ctx.keyPrincipals.forgetAll();
  return startSession(ctx, tokens, user!.id, invitation.orgId);
}
