import { Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/context.ts";
import { CREDENTIAL_SETTINGS, isCredentialProvider, validCredential } from "../../app/credentials.ts";
import { authorize } from "../../app/identity.ts";
import type { Principal } from "../../domain/access.ts";
import { forbidden, notFound } from "../../domain/errors.ts";
import type { SealedCredential } from "../../store/store.ts";

const Name = Type.Object({ name: Type.String({ minLength: 1, maxLength: 40 }) });

/**
 * The providers an org works with, and its cloud credentials: stored sealed, shown only by the last
 * characters of the key, never returned or logged. A stored credential takes the place of the
 * environment's for that cloud; this server uses it at once, other replicas within 30 s.
 */
export function credentialRoutes(api: FastifyInstance, ctx: AppContext): void {
  const app = api.withTypeProvider<TypeBoxTypeProvider>();
  const providersView = async (orgId: string) => {
    const stored = new Map((await ctx.store.listCredentials(orgId)).map((c) => [c.provider, c]));
    const clouds = Object.entries(CREDENTIAL_SETTINGS).map(([name, settings]) =>
      providerView(name, stored.get(name), Boolean(process.env[settings.key])),
    );
    const others = ctx.providers
      .filter((p) => !isCredentialProvider(p.name))
      .map((p) => ({ name: p.name, configured_by: "server", key_hint: null, updated_at: null }));
    return { providers: [...others, ...clouds], in_use: ctx.providers.map((p) => p.name) };
  };

  app.get("/providers", { schema: { tags: ["offers"] } }, async (request) => providersView(request.orgId));

  app.put(
    "/providers/:name/credentials",
    {
      schema: {
        tags: ["offers"],
        params: Name,
        body: Type.Object(
          {
            api_key: Type.String({ minLength: 1, maxLength: 4096 }),
            api_url: Type.Optional(Type.Union([Type.String({ maxLength: 2048 }), Type.Null()])),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      manageDeploymentClouds(ctx, request.principal);
      const { provider, credential } = validCredential(request.params.name, request.body);
      await ctx.store.putCredential({
        ...ctx.credentials.vault.seal(request.orgId, provider, credential),
        updatedAt: ctx.now(),
      });
      await ctx.credentials.refresh(ctx);
      return providersView(request.orgId);
    },
  );

  app.delete(
    "/providers/:name/credentials",
    { schema: { tags: ["offers"], params: Name } },
    async (request, reply) => {
      manageDeploymentClouds(ctx, request.principal);
      if (!(await ctx.store.deleteCredential(request.orgId, request.params.name))) {
        throw notFound("credential_not_found", `No stored credential for "${request.params.name}"`);
      }
      await ctx.credentials.refresh(ctx);
      return reply.code(204).send();
    },
  );
}

/**
 * The clouds launch with the credentials of the deployment's own org (every org's work runs on
 * them and is billed per org); storing them needs the manage right there.
 */
function manageDeploymentClouds(ctx: AppContext, principal: Principal): void {
  authorize(principal, "manage");
  if (principal.orgId !== ctx.defaultOrgId) {
    throw forbidden(
      "clouds_per_deployment",
      "Cloud credentials are set for the whole deployment, by an admin of its own organization",
    );
  }
}

function providerView(name: string, stored: SealedCredential | undefined, inEnvironment: boolean) {
  if (stored) {
    return {
      name,
      configured_by: "org",
      key_hint: `…${stored.keyHint}`,
      updated_at: new Date(stored.updatedAt).toISOString(),
    };
  }
  return { name, configured_by: inEnvironment ? "server" : null, key_hint: null, updated_at: null };
}
