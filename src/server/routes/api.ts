import { once } from "node:events";
import { Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { AppContext } from "../../app/context.ts";
import { createDataset, getDataset, type UploadedFile } from "../../app/datasets.ts";
import { authenticate, authorize } from "../../app/identity.ts";
import { createNotebook, getNotebook } from "../../app/notebooks.ts";
import {
  cancelRun,
  downloadLinks,
  getRun,
  type RunRequest as RunRequestBody,
  submitRun,
} from "../../app/runs.ts";
import type { Action, Principal } from "../../domain/access.ts";
import { badRequest, payloadTooLarge, tooManyRequests } from "../../domain/errors.ts";
import { isTerminal } from "../../domain/job.ts";
import { PROVISIONING_STRATEGIES } from "../../domain/provisioning.ts";
import { datasetView, notebookView, runView } from "../views.ts";
import { accountRoutes } from "./accounts.ts";
import { credentialRoutes } from "./credentials.ts";
import { offerRoutes } from "./offers.ts";
import { predictionRoutes } from "./predictions.ts";

declare module "fastify" {
  interface FastifyRequest {
    /** Who the request acts for; set by the API's authentication hook. */
    principal: Principal;
    /** The principal's org: every user-owned row read or written is scoped by it. */
    orgId: string;
  }
}

const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });
const ListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
});
const JsonValue = Type.Unknown({ description: "any JSON value" });

const RunRequest = Type.Object(
  {
    datasets: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 100 })),
    parameters: Type.Optional(Type.Record(Type.String(), JsonValue)),
    gpu: Type.Optional(
      Type.Union([
        Type.Object(
          { type: Type.String({ minLength: 1 }), count: Type.Integer({ minimum: 1, maximum: 16 }) },
          { additionalProperties: false },
        ),
        Type.Null(),
      ]),
    ),
    strategy: Type.Optional(
      Type.Union(
        PROVISIONING_STRATEGIES.map((name) => Type.Literal(name)),
        {
          description: "How a GPU run's cloud instance is launched; absent: the deployment's default",
        },
      ),
    ),
    priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
    timeout_s: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 24 * 3600 })),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    backoff_min_s: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400 })),
    backoff_max_s: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400 })),
  },
  { additionalProperties: false },
);

export const bearer = (request: FastifyRequest): string | undefined => {
  const header = request.headers.authorization;
  return header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
};

declare module "fastify" {
  interface FastifyContextConfig {
    /** What a route needs at least, when not what its method says (routes check further rights themselves). */
    action?: Action;
  }
}

/** Reads need "read"; anything that changes state needs "write" (routes that manage ask for more). */
const actionOf = (request: FastifyRequest): Action =>
  request.routeOptions.config?.action ??
  (request.method === "GET" || request.method === "HEAD" ? "read" : "write");

export function apiRoutes(ctx: AppContext) {
  return async (scoped: FastifyInstance) => {
    const app = scoped.withTypeProvider<TypeBoxTypeProvider>();
    app.decorateRequest("orgId", "");
    app.decorateRequest("principal");
    app.addHook("onRequest", async (request, reply) => {
      const principal = await authenticate(ctx, ctx.sessions, bearer(request));
      const { rateLimitPerMinute: perUser, orgRateLimitPerMinute: perOrg } = ctx.config;
      const admission = ctx.rateLimiter.admit(
        [
          ...(principal.keyId ? [{ name: `key:${principal.keyId}`, perMinute: perUser }] : []),
          { name: `user:${principal.userId}`, perMinute: perUser },
          { name: `org:${principal.orgId}`, perMinute: perOrg },
        ],
        ctx.now(),
      );
      if (!admission.admitted) {
        reply.header("retry-after", String(admission.retryAfterS));
        throw tooManyRequests(admission.limit.split(":")[0]!, admission.retryAfterS);
      }
      authorize(principal, actionOf(request));
      request.principal = principal;
      request.orgId = principal.orgId;
    });

    app.post(
      "/notebooks",
      {
        schema: {
          tags: ["notebooks"],
          summary: "Upload a notebook (multipart .ipynb)",
          consumes: ["multipart/form-data"],
          uploadForm: Type.Object({
            file: Type.String({
              format: "binary",
              description: "The .ipynb (nbformat 4); its file name names the notebook",
            }),
          }),
        },
      },
      async (request, reply) => {
        const file = await request.file();
        if (!file) throw badRequest("no_files", "Attach the notebook as a multipart file field");
        const bytes = await file.toBuffer();
        const notebook = await createNotebook(ctx, request.orgId, file.filename, bytes);
        return reply.code(201).send(notebookView(notebook));
      },
    );

    app.get("/notebooks", { schema: { tags: ["notebooks"], querystring: ListQuery } }, async (request) => ({
      notebooks: (await ctx.store.listNotebooks(request.orgId, request.query.limit ?? 100)).map(notebookView),
    }));

    app.get("/notebooks/:id", { schema: { tags: ["notebooks"], params: Id } }, async (request) => {
      return notebookView(await getNotebook(ctx, request.orgId, request.params.id));
    });

    app.post(
      "/datasets",
      {
        schema: {
          tags: ["datasets"],
          summary: "Upload one or many files as a dataset",
          consumes: ["multipart/form-data"],
          uploadForm: Type.Object({
            name: Type.Optional(
              Type.String({ description: "The dataset's name (default: the first file's)" }),
            ),
            file: Type.Array(Type.String({ format: "binary" }), {
              description:
                "One part per file; each part's file name is its path inside the dataset (`sub/b.csv`)",
            }),
          }),
        },
      },
      async (request, reply) => {
        let name: string | undefined;
        async function* files(): AsyncGenerator<UploadedFile> {
          for await (const part of request.parts()) {
            if (part.type === "field") {
              if (part.fieldname === "name" && typeof part.value === "string") name = part.value;
              continue;
            }
            yield { fileName: part.filename, stream: part.file };
            if (part.file.truncated) {
              throw payloadTooLarge(
                `${part.filename} is larger than the ${ctx.config.maxUploadBytes}-byte upload limit`,
                {
                  limit: ctx.config.maxUploadBytes,
                },
              );
            }
          }
        }
        const dataset = await createDataset(ctx, request.orgId, files(), () => name);
        return reply.code(201).send(datasetView(dataset));
      },
    );

    app.get("/datasets", { schema: { tags: ["datasets"], querystring: ListQuery } }, async (request) => ({
      datasets: (await ctx.store.listDatasets(request.orgId, request.query.limit ?? 100)).map(datasetView),
    }));

    app.get("/datasets/:id", { schema: { tags: ["datasets"], params: Id } }, async (request) => {
      return datasetView(await getDataset(ctx, request.orgId, request.params.id));
    });

    app.post(
      "/notebooks/:id/runs",
      { schema: { tags: ["runs"], params: Id, body: Type.Union([RunRequest, Type.Null()]) } },
      async (request, reply) => {
        // The schema admits any JSON value for a parameter, which is exactly JsonObject.
        const job = await submitRun(
          ctx,
          request.principal,
          request.params.id,
          (request.body ?? {}) as RunRequestBody,
        );
        return reply.code(201).send(runView(job));
      },
    );

    app.get(
      "/notebooks/:id/runs",
      { schema: { tags: ["runs"], params: Id, querystring: ListQuery } },
      async (request) => {
        const notebook = await getNotebook(ctx, request.orgId, request.params.id);
        const jobs = await ctx.store.listJobs({
          orgId: request.orgId,
          notebookId: notebook.id,
          limit: request.query.limit ?? 100,
        });
        return { runs: jobs.map(runView) };
      },
    );

    app.get("/runs", { schema: { tags: ["runs"], querystring: ListQuery } }, async (request) => ({
      runs: (
        await ctx.store.listJobs({
          orgId: request.orgId,
          kind: "notebook",
          limit: request.query.limit ?? 100,
        })
      ).map(runView),
    }));

    app.get("/runs/:id", { schema: { tags: ["runs"], params: Id } }, async (request) =>
      runView(await getRun(ctx, request.orgId, request.params.id)),
    );

    app.post("/runs/:id/cancel", { schema: { tags: ["runs"], params: Id } }, async (request) =>
      runView(await cancelRun(ctx, request.orgId, request.params.id)),
    );

    app.get("/runs/:id/download", { schema: { tags: ["runs"], params: Id } }, async (request) =>
      downloadLinks(ctx, request.orgId, request.params.id),
    );

    predictionRoutes(app, ctx);
    offerRoutes(app, ctx);
    credentialRoutes(app, ctx);
    accountRoutes(app, ctx);

    app.get(
      "/runs/:id/logs",
      {
        schema: {
          tags: ["runs"],
          params: Id,
          querystring: Type.Object({ follow: Type.Optional(Type.Boolean({ default: false })) }),
          description: "The run's log; with follow=true, Server-Sent Events until the run ends",
        },
      },
      async (request, reply) => {
        const { orgId } = request;
        const job = await getRun(ctx, orgId, request.params.id);
        const readAll = async (cursor: { attempt: number; seq: number }) => {
          const entries = [];
          for (;;) {
            const page = await ctx.store.readLogs(orgId, job.id, cursor, 1000);
            entries.push(...page);
            if (page.length < 1000) return entries;
            const last = page[page.length - 1]!;
            cursor = { attempt: last.attempt, seq: last.seq };
          }
        };
        if (!request.query.follow) {
          const entries = await readAll({ attempt: 0, seq: 0 });
          return reply.type("text/plain; charset=utf-8").send(entries.map((e) => e.text).join(""));
        }
        const [attempt, seq] = (request.headers["last-event-id"] ?? "0:0").toString().split(":").map(Number);
        let cursor = { attempt: attempt || 0, seq: seq || 0 };
        reply.hijack();
        const raw = reply.raw;
        raw.writeHead(200, {
          "content-type": "text/event-stream",
          "cache-control": "no-cache",
          connection: "keep-alive",
          "x-request-id": request.id,
        });
        const closed = new AbortController();
        raw.on("close", () => closed.abort());
        while (!closed.signal.aborted) {
          for (const entry of await readAll(cursor)) {
            raw.write(`id: ${entry.attempt}:${entry.seq}\nevent: log\ndata: ${JSON.stringify(entry)}\n\n`);
            cursor = { attempt: entry.attempt, seq: entry.seq };
          }
          const current = await ctx.store.getJob(orgId, job.id);
          if (!current || isTerminal(current.status)) {
            raw.write(`event: end\ndata: ${JSON.stringify({ status: current?.status ?? "unknown" })}\n\n`);
            break;
          }
          await once(ctx.events, `log:${job.id}`, {
            signal: AbortSignal.any([closed.signal, AbortSignal.timeout(1000)]),
          }).catch(() => undefined);
        }
        raw.end();
      },
    );
  };
}
