import { Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/context.ts";
import {
  acceptInvitation,
  addMember,
  authorizeOrg,
  createApiKey,
  createOrg,
  invite,
  listApiKeys,
  login,
  logout,
  refresh,
  removeMember,
  requirePlatformAdmin,
  revokeApiKey,
  type SignedIn,
} from "../../app/identity.ts";
import { ROLES, type Role, SCOPES, type Scope } from "../../domain/access.ts";
import { badRequest, notFound, tooManyRequests } from "../../domain/errors.ts";
import { grantEntry, refundEntry } from "../../domain/ledger.ts";
import { formatMicro, MICRO_PER_UNIT } from "../../domain/money.ts";
import type { ApiKeyRecord, OrgRecord, UsageRow } from "../../store/accounts.ts";

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const OrgParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });
const RoleSchema = Type.Union(ROLES.map((role) => Type.Literal(role)));
const ScopeSchema = Type.Union(SCOPES.map((scope) => Type.Literal(scope)));
const Email = Type.String({ minLength: 3, maxLength: 254, pattern: "^[^@\\s]+@[^@\\s]+$" });
/** Money in requests: a decimal string ("12.50") or number, at most 6 decimals, in the one currency. */
const Amount = Type.Union([
  Type.String({ pattern: "^\\d{1,12}(\\.\\d{1,6})?$" }),
  Type.Number({ minimum: 0, maximum: 1e12 }),
]);

/** Whole micro-units of a decimal amount, without going through a float's rounding. */
export function parseAmount(amount: string | number): number {
  const text = typeof amount === "number" ? amount.toFixed(6) : amount;
  const [whole, fraction = ""] = text.split(".");
  if (fraction.length > 6) throw badRequest("invalid_amount", `${text} has more than 6 decimals`);
  return Number(whole) * MICRO_PER_UNIT + Number(fraction.padEnd(6, "0"));
}

const sessionView = (session: SignedIn) => ({
  access_token: session.accessToken,
  token_type: "Bearer",
  expires_at: iso(session.expiresAt),
  refresh_token: session.refreshToken,
  org_id: session.orgId,
  user_id: session.userId,
});

const orgView = (org: OrgRecord) => ({
  id: org.id,
  name: org.name,
  created_at: iso(org.createdAt),
  default_priority: org.defaultPriority,
  max_running_jobs: org.maxRunningJobs,
  max_gpus: org.maxGpus,
  max_instances: org.maxInstances,
});

const keyView = (key: ApiKeyRecord) => ({
  id: key.id,
  name: key.name,
  prefix: key.prefix,
  user_id: key.userId,
  scopes: key.scopes,
  created_at: iso(key.createdAt),
  expires_at: iso(key.expiresAt),
  revoked_at: iso(key.revokedAt),
});

const usageView = (row: UsageRow) => ({
  group: row.group,
  attempts: row.attempts,
  busy_seconds: Math.round(row.busyMs) / 1000,
  cost: formatMicro(row.costMicro),
});

/** Sign-in, refresh, sign-out and accepting an invitation: the routes that take no credentials. */
export function authRoutes(ctx: AppContext) {
  return async (scoped: FastifyInstance) => {
    const app = scoped.withTypeProvider<TypeBoxTypeProvider>();
    // Guessing passwords or tokens is slowed per client address.
    app.addHook("onRequest", async (request, reply) => {
      const admission = ctx.rateLimiter.admit(
        [{ name: `ip:${request.ip}`, perMinute: ctx.config.loginRateLimitPerMinute }],
        ctx.now(),
      );
      if (!admission.admitted) {
        reply.header("retry-after", String(admission.retryAfterS));
        throw tooManyRequests("client address", admission.retryAfterS);
      }
    });
    const RefreshBody = Type.Object(
      { refresh_token: Type.String({ minLength: 1, maxLength: 200 }) },
      { additionalProperties: false },
    );
    app.post(
      "/auth/login",
      {
        schema: {
          tags: ["auth"],
          summary: "Sign in: a short-lived access token (JWT) and a refresh token",
          security: [],
          body: Type.Object(
            {
              email: Email,
              password: Type.String({ minLength: 1, maxLength: 1024 }),
              org: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
            },
            { additionalProperties: false },
          ),
        },
      },
      async (request) => sessionView(await login(ctx, ctx.sessions, request.body)),
    );
    app.post(
      "/auth/refresh",
      { schema: { tags: ["auth"], security: [], body: RefreshBody } },
      async (request) => sessionView(await refresh(ctx, ctx.sessions, request.body.refresh_token)),
    );
    app.post(
      "/auth/logout",
      { schema: { tags: ["auth"], security: [], body: RefreshBody } },
      async (request, reply) => {
        await logout(ctx, request.body.refresh_token);
        return reply.code(204).send();
      },
    );
    app.post(
      "/invitations/accept",
      {
        schema: {
          tags: ["auth"],
          summary: "Join an org by invitation (creating the account when the email is new)",
          security: [],
          body: Type.Object(
            {
              token: Type.String({ minLength: 1, maxLength: 200 }),
              password: Type.String({ minLength: 1, maxLength: 1024 }),
              name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
            },
            { additionalProperties: false },
          ),
        },
      },
      async (request, reply) =>
        reply.code(201).send(sessionView(await acceptInvitation(ctx, ctx.sessions, request.body))),
    );
  };
}

/** Orgs, members, invitations, API keys, credits, usage and budgets (behind the API's authentication). */
export function accountRoutes(api: FastifyInstance, ctx: AppContext): void {
  const app = api.withTypeProvider<TypeBoxTypeProvider>();
  const { accounts, ledger } = ctx.store;

  // A platform admin may act on any org: one that does not exist is a 404 before anything is written.
  app.addHook("preHandler", async (request) => {
    const orgId = (request.params as { id?: string } | undefined)?.id;
    if (!request.routeOptions.url?.startsWith("/api/v1/orgs/:id") || orgId === undefined) return;
    if (orgId !== request.principal.orgId && !(await accounts.getOrg(orgId))) {
      throw notFound("org_not_found", `No organization ${orgId}`);
    }
  });

  app.get("/me", { schema: { tags: ["auth"] } }, async (request) => {
    const { principal } = request;
    const user = await accounts.getUser(principal.userId);
    return {
      user: user && { id: user.id, email: user.email, name: user.name, platform_admin: user.platformAdmin },
      org_id: principal.orgId,
      role: principal.role,
      scopes: principal.scopes,
      key_id: principal.keyId,
      orgs: (await accounts.listMemberships(principal.userId)).map((m) => ({
        id: m.orgId,
        name: m.orgName,
        role: m.role,
      })),
    };
  });

  app.post(
    "/orgs",
    {
      schema: {
        tags: ["orgs"],
        summary: "Create an organization (platform admins)",
        body: Type.Object(
          { name: Type.String({ minLength: 1, maxLength: 200 }), owner_email: Type.Optional(Email) },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      let ownerId: string | undefined;
      if (request.body.owner_email) {
        requirePlatformAdmin(request.principal, "create organizations");
        const owner = await accounts.findUserByEmail(request.body.owner_email);
        if (!owner) throw notFound("user_not_found", `No user with email ${request.body.owner_email}`);
        ownerId = owner.id;
      }
      const org = await createOrg(ctx, request.principal, request.body.name, ownerId);
      return reply.code(201).send(orgView(org));
    },
  );

  app.get("/orgs/:id", { schema: { tags: ["orgs"], params: OrgParams } }, async (request) => {
    authorizeOrg(request.principal, request.params.id, "read");
    const org = await accounts.getOrg(request.params.id);
    if (!org) throw notFound("org_not_found", `No organization ${request.params.id}`);
    return orgView(org);
  });

  const Limit = Type.Union([Type.Integer({ minimum: 0, maximum: 1_000_000 }), Type.Null()]);
  app.patch(
    "/orgs/:id",
    {
      schema: {
        tags: ["orgs"],
        summary: "Set the org's default priority and concurrency limits (null: no limit)",
        params: OrgParams,
        body: Type.Object(
          {
            default_priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
            max_running_jobs: Type.Optional(Limit),
            max_gpus: Type.Optional(Limit),
            max_instances: Type.Optional(Limit),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      authorizeOrg(request.principal, request.params.id, "manage");
      const { body } = request;
      const org = await accounts.setOrgLimits(request.params.id, {
        ...(body.default_priority !== undefined ? { defaultPriority: body.default_priority } : {}),
        ...(body.max_running_jobs !== undefined ? { maxRunningJobs: body.max_running_jobs } : {}),
        ...(body.max_gpus !== undefined ? { maxGpus: body.max_gpus } : {}),
        ...(body.max_instances !== undefined ? { maxInstances: body.max_instances } : {}),
      });
      if (!org) throw notFound("org_not_found", `No organization ${request.params.id}`);
      return orgView(org);
    },
  );

  app.get("/orgs/:id/members", { schema: { tags: ["orgs"], params: OrgParams } }, async (request) => {
    authorizeOrg(request.principal, request.params.id, "read");
    return {
      members: (await accounts.listMembers(request.params.id)).map((m) => ({
        user_id: m.userId,
        email: m.email,
        name: m.name,
        role: m.role,
        since: iso(m.createdAt),
      })),
    };
  });

  app.post(
    "/orgs/:id/members",
    {
      schema: {
        tags: ["orgs"],
        summary: "Add an existing user to the org, or change its role",
        params: OrgParams,
        body: Type.Object({ email: Email, role: RoleSchema }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const added = await addMember(ctx, request.principal, request.params.id, {
        email: request.body.email,
        role: request.body.role as Role,
      });
      return reply.code(201).send({ user_id: added.userId, role: added.role });
    },
  );

  app.delete(
    "/orgs/:id/members/:user_id",
    {
      schema: {
        tags: ["orgs"],
        params: Type.Object({
          id: OrgParams.properties.id,
          user_id: Type.String({ minLength: 1, maxLength: 100 }),
        }),
      },
    },
    async (request, reply) => {
      await removeMember(ctx, request.principal, request.params.id, request.params.user_id);
      return reply.code(204).send();
    },
  );

  app.post(
    "/orgs/:id/invitations",
    {
      schema: {
        tags: ["orgs"],
        summary: "Invite someone by email; the token is shown once",
        params: OrgParams,
        body: Type.Object(
          {
            email: Email,
            role: RoleSchema,
            expires_in_days: Type.Optional(Type.Integer({ minimum: 1, maximum: 90 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { record, token } = await invite(ctx, request.principal, request.params.id, {
        email: request.body.email,
        role: request.body.role as Role,
        ...(request.body.expires_in_days ? { expiresInDays: request.body.expires_in_days } : {}),
      });
      return reply.code(201).send({
        id: record.id,
        email: record.email,
        role: record.role,
        expires_at: iso(record.expiresAt),
        token,
      });
    },
  );

  app.get("/orgs/:id/api-keys", { schema: { tags: ["keys"], params: OrgParams } }, async (request) => ({
    api_keys: (await listApiKeys(ctx, request.principal, request.params.id)).map(keyView),
  }));

  app.post(
    "/orgs/:id/api-keys",
    {
      // A viewer may make itself a read-only key; createApiKey checks the rest.
      config: { action: "read" },
      schema: {
        tags: ["keys"],
        summary: "Create an API key; its secret is shown once",
        params: OrgParams,
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 200 }),
            scopes: Type.Optional(Type.Array(ScopeSchema, { minItems: 1, maxItems: 3, uniqueItems: true })),
            expires_in_days: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
            user_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { body } = request;
      const { record, secret } = await createApiKey(ctx, request.principal, request.params.id, {
        name: body.name,
        ...(body.scopes ? { scopes: body.scopes as Scope[] } : {}),
        ...(body.expires_in_days ? { expiresInDays: body.expires_in_days } : {}),
        ...(body.user_id ? { userId: body.user_id } : {}),
      });
      return reply.code(201).send({ ...keyView(record), key: secret });
    },
  );

  app.delete(
    "/orgs/:id/api-keys/:key_id",
    {
      config: { action: "read" },
      schema: {
        tags: ["keys"],
        params: Type.Object({
          id: OrgParams.properties.id,
          key_id: Type.String({ minLength: 1, maxLength: 100 }),
        }),
      },
    },
    async (request) =>
      keyView(await revokeApiKey(ctx, request.principal, request.params.id, request.params.key_id)),
  );

  app.post(
    "/orgs/:id/credits",
    {
      schema: {
        tags: ["credits"],
        summary: "Grant credits, or refund a charge (platform admins); idempotent by reference",
        params: OrgParams,
        body: Type.Object(
          {
            amount: Amount,
            reference: Type.String({ minLength: 1, maxLength: 200, description: "Idempotency key" }),
            kind: Type.Optional(Type.Union([Type.Literal("grant"), Type.Literal("refund")])),
            subject: Type.Optional(Type.String({ maxLength: 100, description: "The run or batch refunded" })),
            note: Type.Optional(Type.String({ maxLength: 500 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      requirePlatformAdmin(request.principal, "grant credits");
      const orgId = request.params.id;
      if (!(await accounts.getOrg(orgId))) throw notFound("org_not_found", `No organization ${orgId}`);
      const amount = parseAmount(request.body.amount);
      if (amount <= 0) throw badRequest("invalid_amount", "The amount must be more than 0");
      const { reference, note = null } = request.body;
      const entry =
        request.body.kind === "refund"
          ? refundEntry(orgId, reference, amount, request.body.subject ?? null, note)
          : grantEntry(orgId, reference, amount, note);
      const created = (await ledger.post([entry], ctx.now())) === 1;
      return reply.code(created ? 201 : 200).send({ created, ...(await creditsView(orgId)) });
    },
  );

  app.get(
    "/orgs/:id/credits",
    {
      schema: {
        tags: ["credits"],
        params: OrgParams,
        querystring: Type.Object({
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 100 })),
        }),
      },
    },
    async (request) => {
      authorizeOrg(request.principal, request.params.id, "read");
      return creditsView(request.params.id, request.query.limit ?? 100);
    },
  );

  async function creditsView(orgId: string, limit = 20) {
    const balances = await ledger.balances(orgId);
    return {
      org_id: orgId,
      currency: "USD",
      balance: formatMicro(balances.available),
      held: formatMicro(balances.held),
      spent: formatMicro(balances.spent),
      granted: formatMicro(-balances.external),
      entries: (await ledger.listEntries(orgId, limit)).map((entry) => ({
        key: entry.key,
        kind: entry.kind,
        from: entry.from,
        to: entry.to,
        amount: formatMicro(entry.amount),
        subject: entry.subject,
        user_id: entry.userId,
        note: entry.note,
        at: iso(entry.createdAt),
      })),
    };
  }

  app.get(
    "/orgs/:id/usage",
    {
      schema: {
        tags: ["credits"],
        summary: "Instance time and cost of the org's work, grouped; JSON or CSV",
        params: OrgParams,
        querystring: Type.Object({
          from: Type.Optional(Type.String({ format: "date-time" })),
          to: Type.Optional(Type.String({ format: "date-time" })),
          group_by: Type.Optional(
            Type.Union(
              ["user", "model", "gpu_type", "provider", "day"].map((g) => Type.Literal(g)),
              { default: "day" },
            ),
          ),
          format: Type.Optional(Type.Union([Type.Literal("json"), Type.Literal("csv")], { default: "json" })),
        }),
      },
    },
    async (request, reply) => {
      authorizeOrg(request.principal, request.params.id, "read");
      const now = ctx.now();
      const from = request.query.from ? Date.parse(request.query.from) : now - 30 * 86_400_000;
      const to = request.query.to ? Date.parse(request.query.to) : now + 1;
      if (!(from < to)) throw badRequest("invalid_range", "`from` must be before `to`");
      const groupBy = (request.query.group_by ?? "day") as "user" | "model" | "gpu_type" | "provider" | "day";
      const rows = await ledger.usage({ orgId: request.params.id, from, to, groupBy });
      if (request.query.format === "csv") {
        const lines = [
          `${groupBy},attempts,busy_seconds,cost`,
          ...rows.map((r) => {
            const v = usageView(r);
            return [csvField(v.group), v.attempts, v.busy_seconds, v.cost].join(",");
          }),
        ];
        return reply.type("text/csv; charset=utf-8").send(`${lines.join("\n")}\n`);
      }
      return {
        org_id: request.params.id,
        from: iso(from),
        to: iso(to),
        group_by: groupBy,
        rows: rows.map(usageView),
        total: formatMicro(rows.reduce((sum, r) => sum + r.costMicro, 0)),
      };
    },
  );

  const BudgetBody = Type.Object(
    {
      monthly_limit: Amount,
      action: Type.Optional(
        Type.Union([Type.Literal("refuse"), Type.Literal("stop")], { default: "refuse" }),
      ),
      webhook_url: Type.Optional(Type.Union([Type.String({ format: "uri", maxLength: 2048 }), Type.Null()])),
      user_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    },
    { additionalProperties: false },
  );
  app.put(
    "/orgs/:id/budgets",
    {
      schema: {
        tags: ["credits"],
        summary: "Set the org's (or one member's) monthly spending limit",
        params: OrgParams,
        body: BudgetBody,
      },
    },
    async (request) => {
      authorizeOrg(request.principal, request.params.id, "manage");
      const { body } = request;
      if (body.user_id && !(await accounts.getMembership(request.params.id, body.user_id))) {
        throw notFound("member_not_found", `User ${body.user_id} is not a member of ${request.params.id}`);
      }
      await ledger.putBudget(
        {
          orgId: request.params.id,
          userId: body.user_id ?? null,
          monthlyLimitMicro: parseAmount(body.monthly_limit),
          action: body.action ?? "refuse",
          webhookUrl: body.webhook_url ?? null,
        },
        ctx.now(),
      );
      return budgetsView(request.params.id);
    },
  );

  app.get("/orgs/:id/budgets", { schema: { tags: ["credits"], params: OrgParams } }, async (request) => {
    authorizeOrg(request.principal, request.params.id, "read");
    return budgetsView(request.params.id);
  });

  app.delete(
    "/orgs/:id/budgets",
    {
      schema: {
        tags: ["credits"],
        params: OrgParams,
        querystring: Type.Object({ user_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })) }),
      },
    },
    async (request, reply) => {
      authorizeOrg(request.principal, request.params.id, "manage");
      if (!(await ledger.deleteBudget(request.params.id, request.query.user_id ?? null))) {
        throw notFound("budget_not_found", "No such budget");
      }
      return reply.code(204).send();
    },
  );

  async function budgetsView(orgId: string) {
    return {
      budgets: (await ledger.listBudgets(orgId)).map((b) => ({
        user_id: b.userId,
        monthly_limit: formatMicro(b.monthlyLimitMicro),
        action: b.action,
        webhook_url: b.webhookUrl,
      })),
      events: (await ledger.listBudgetEvents(orgId, 50)).map((e) => ({
        user_id: e.userId,
        month: e.month,
        threshold_percent: e.threshold,
        spent: formatMicro(e.spentMicro),
        limit: formatMicro(e.limitMicro),
        at: iso(e.createdAt),
      })),
    };
  }

  app.get(
    "/runs/:id/usage",
    {
      schema: {
        tags: ["credits"],
        summary: "A run's or prediction's attempts and what each cost",
        params: OrgParams,
      },
    },
    async (request) => {
      const job = await ctx.store.getJob(request.orgId, request.params.id);
      if (!job) throw notFound("run_not_found", `No run ${request.params.id}`);
      const attempts = await ledger.usageOfJob(request.orgId, job.id);
      return {
        run_id: job.id,
        status: job.status,
        attempts: attempts.map((a) => ({
          attempt: a.attempt,
          instance_id: a.instanceId,
          provider: a.provider,
          started_at: iso(a.startedAt),
          ended_at: iso(a.endedAt),
          busy_ms: a.endedAt - a.startedAt,
          price_per_hour: formatMicro(a.pricePerHourMicro),
          share: a.share,
          cost: formatMicro(a.costMicro),
        })),
        cost: formatMicro(attempts.reduce((sum, a) => sum + a.costMicro, 0)),
        held: formatMicro(await ledger.heldFor(request.orgId, job.id)),
      };
    },
  );
}

const csvField = (value: string) => (/[",\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value);
