import { randomUUID } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import multipart from "@fastify/multipart";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { TSchema } from "@fastify/type-provider-typebox";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { AgentHub } from "../app/agent-hub.ts";
import type { AppContext } from "../app/context.ts";
import { FsBlobStore } from "../blob/fs/fs-blob-store.ts";
import { HangarError } from "../domain/errors.ts";
import { frameworkErrors, installErrorHandling } from "./errors.ts";
import { authRoutes } from "./routes/accounts.ts";
import { agentRoutes } from "./routes/agent.ts";
import { apiRoutes } from "./routes/api.ts";
import { blobRoutes } from "./routes/blobs.ts";

declare module "fastify" {
  interface FastifySchema {
    /** A multipart route's form, for the API document only (see the swagger transform below). */
    uploadForm?: TSchema;
  }
}

export interface HttpOptions {
  /** The bundled agent served at /agent.mjs, so a bare instance can fetch and run it. */
  agentBundlePath: string;
  version: string;
}

export async function buildHttpApp(
  ctx: AppContext,
  hub: AgentHub,
  options: HttpOptions,
): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    genReqId: (request) => (request.headers["x-request-id"] as string | undefined) ?? randomUUID(),
    frameworkErrors,
    bodyLimit: 16 * 1024 * 1024,
    // The agent's long poll holds requests for up to a minute.
    requestTimeout: 120_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: "array", useDefaults: true } },
  });
  installErrorHandling(app);

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    const labels = { method: request.method, route };
    ctx.metrics.httpRequests.inc({ ...labels, status: String(reply.statusCode) });
    ctx.metrics.httpDuration.observe(labels, reply.elapsedTime / 1000);
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "Hangar API",
        version: options.version,
        description: "Run notebooks with their datasets on the cheapest suitable machine.",
      },
      components: { securitySchemes: { apiKey: { type: "http", scheme: "bearer" } } },
      security: [{ apiKey: [] }],
    },
    // Multipart routes read their parts as streams, so their form is documented (`uploadForm`) but
    // never given to Fastify as a body schema, which would validate a body they do not have.
    transform: ({ schema, url }) => {
      if (!schema?.uploadForm) return { schema, url };
      const { uploadForm, ...rest } = schema;
      return { schema: { ...rest, body: uploadForm }, url };
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });
  await app.register(multipart, {
    // Keep the client's file name as sent (`sub/b.csv`, `../x`): dataset paths need their folders,
    // and unsafe names must reach assertSafeRelativePath to be refused, not be silently basenamed.
    preservePath: true,
    limits: { fileSize: ctx.config.maxUploadBytes, files: 10_000, fields: 20, fieldSize: 1024 * 1024 },
  });

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
  app.get("/healthz", { schema: { tags: ["ops"] } }, async () => ({
    status: ctx.draining ? "draining" : "ok",
    store: ctx.store.dialect,
    providers: ctx.providers.map((provider) => provider.name),
    version: options.version,
    // Stray instances the provider has not ended after repeated requests: still billed, act on them.
    instances_refusing_termination: ctx.terminations.alerts().map((alert) => ({
      provider_instance_id: alert.providerInstanceId,
      failures: alert.failures,
      first_failed_at: new Date(alert.firstFailedAt).toISOString(),
      last_error: alert.lastError,
    })),
  }));
  app.get("/metrics", { schema: { tags: ["ops"] } }, async (_request, reply) =>
    reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics()),
  );
  app.get("/agent.mjs", { schema: { tags: ["agent"] } }, async (_request, reply) => {
    if (!existsSync(options.agentBundlePath)) {
      throw new HangarError(
        503,
        "agent_bundle_missing",
        "The agent bundle is not built; run `npm run build`",
      );
    }
    return reply.type("text/javascript").send(createReadStream(options.agentBundlePath));
  });

  await app.register(authRoutes(ctx), { prefix: "/api/v1" });
  await app.register(apiRoutes(ctx), { prefix: "/api/v1" });
  await app.register(agentRoutes(ctx, hub), { prefix: "/agent/v1" });
  if (ctx.blobs.capabilities.signedUrlsServedByApi && ctx.blobs instanceof FsBlobStore) {
    await app.register(blobRoutes(ctx, ctx.blobs));
  }
  return app;
}
