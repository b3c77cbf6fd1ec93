import { Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Static, TProperties } from "typebox";
import type { AgentHub } from "../../app/agent-hub.ts";
import type { AppContext } from "../../app/context.ts";
import type { Instance } from "../../domain/instance.ts";
import type { JobError } from "../../domain/job.ts";
import type { JsonObject } from "../../domain/json.ts";
import type { FinishOutcome } from "../../store/store.ts";

declare module "fastify" {
  interface FastifyRequest {
    instance: Instance | null;
  }
}

const JobParams = Type.Object({ id: Type.String({ minLength: 1 }) });
const Lease = { lease_token: Type.String({ minLength: 1 }) };
const Progress = Type.Object({ done: Type.Integer(), total: Type.Integer(), phase: Type.String() });
const LogEntry = Type.Object({
  seq: Type.Integer(),
  ts: Type.Number(),
  stream: Type.String(),
  text: Type.String(),
});
const ErrorShape = Type.Object({
  code: Type.String(),
  message: Type.String(),
  retryable: Type.Optional(Type.Boolean()),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

const FinishFields = {
  status: Type.Union([Type.Literal("succeeded"), Type.Literal("failed"), Type.Literal("cancelled")]),
  error: Type.Optional(ErrorShape),
  result: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  score: Type.Optional(Type.Number()),
};

/** How an agent's report ends the attempt. */
function finishOutcome(body: {
  status: "succeeded" | "failed" | "cancelled";
  error?: Static<typeof ErrorShape>;
  result?: Record<string, unknown>;
  score?: number;
}): FinishOutcome {
  const { status, error, result, score } = body;
  if (status === "failed") {
    // A failure the agent could not classify is assumed to be the infrastructure's: retry it.
    const given = error ?? { code: "unknown", message: "The agent gave no details" };
    return { status, error: { retryable: true, ...given } as JobError };
  }
  if (status === "cancelled") {
    return error ? { status, error: { retryable: false, ...error } as JobError } : { status };
  }
  return {
    status: "succeeded",
    ...(result ? { result: result as JsonObject } : {}),
    ...(score !== undefined ? { score } : {}),
  };
}

/** The agent protocol (`/agent/v1`): agents call in over HTTP, so instances behind NAT work. */
export function agentRoutes(ctx: AppContext, hub: AgentHub) {
  return async (scoped: FastifyInstance) => {
    const app = scoped.withTypeProvider<TypeBoxTypeProvider>();
    app.decorateRequest("instance", null);
    const authenticate = async (request: FastifyRequest) => {
      const header = request.headers.authorization;
      request.instance = await hub.authenticate(header?.startsWith("Bearer ") ? header.slice(7) : undefined);
    };

    app.post(
      "/register",
      {
        schema: {
          tags: ["agent"],
          body: Type.Object({ instance_id: Type.String(), bootstrap_token: Type.String() }),
        },
      },
      async (request) => {
        const { agentToken } = await hub.register(request.body.instance_id, request.body.bootstrap_token);
        return {
          agent_token: agentToken,
          heartbeat_s: ctx.config.heartbeatS,
          lease_s: ctx.config.leaseS,
          python: ctx.config.python,
        };
      },
    );

    app.post(
      "/claim",
      {
        onRequest: authenticate,
        schema: {
          tags: ["agent"],
          body: Type.Object({
            wait_s: Type.Optional(Type.Number({ minimum: 0, maximum: 60 })),
            models: Type.Optional(Type.Array(Type.String(), { maxItems: 100 })),
            cores: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
            prefer_batch: Type.Optional(Type.String()),
          }),
        },
      },
      async (request, reply) => {
        const closed = new AbortController();
        // The response closing before we answered means the agent hung up.
        reply.raw.on("close", () => {
          if (!reply.raw.writableEnded) closed.abort();
        });
        const { body } = request;
        const assignment = await hub.claim(request.instance!, (body.wait_s ?? 20) * 1000, closed.signal, {
          models: body.models ?? [],
          cores: body.cores ?? 1,
          ...(body.prefer_batch ? { preferBatch: body.prefer_batch } : {}),
        });
        if (!assignment) return reply.code(204).send();
        if (closed.signal.aborted) {
          // The agent hung up while we claimed: hand the jobs back rather than lose attempts to a lapse.
          const leases =
            assignment.kind === "notebook"
              ? [{ jobId: assignment.job_id, leaseToken: assignment.lease_token }]
              : assignment.items.map((item) => ({ jobId: item.job_id, leaseToken: item.lease_token }));
          for (const lease of leases) await hub.release(request.instance!, lease);
          return reply.code(204).send();
        }
        return assignment;
      },
    );

    /** Options of every call about a claimed job: agent auth, the job id, the lease token and `fields`. */
    const leased = <T extends TProperties>(fields: T) => ({
      onRequest: authenticate,
      schema: { tags: ["agent"], params: JobParams, body: Type.Object({ ...Lease, ...fields }) },
    });
    const leaseOf = (request: { params: { id: string }; body: { lease_token: string } }) => ({
      jobId: request.params.id,
      leaseToken: request.body.lease_token,
    });

    app.post("/jobs/:id/heartbeat", leased({ progress: Type.Optional(Progress) }), async (request) =>
      hub.heartbeat(leaseOf(request), request.body.progress),
    );

    app.post(
      "/heartbeats",
      {
        onRequest: authenticate,
        schema: {
          tags: ["agent"],
          body: Type.Object({
            leases: Type.Array(Type.Object({ job_id: Type.String(), lease_token: Type.String() }), {
              maxItems: 10_000,
            }),
          }),
        },
      },
      async (request) =>
        hub.heartbeats(request.body.leases.map((l) => ({ jobId: l.job_id, leaseToken: l.lease_token }))),
    );

    app.post(
      "/logs",
      {
        onRequest: authenticate,
        schema: {
          tags: ["agent"],
          description: "Stores log lines of several attempts; answers the ones whose lease is lost",
          body: Type.Object({
            items: Type.Array(
              Type.Object({
                job_id: Type.String({ minLength: 1 }),
                ...Lease,
                attempt: Type.Integer({ minimum: 1 }),
                entries: Type.Array(LogEntry, { maxItems: 10_000 }),
              }),
              { minItems: 1, maxItems: 1_000 },
            ),
          }),
        },
      },
      async (request) =>
        hub.appendLogs(
          request.body.items.map((item) => ({
            lease: { jobId: item.job_id, leaseToken: item.lease_token },
            attempt: item.attempt,
            entries: item.entries,
          })),
        ),
    );

    app.post(
      "/jobs/:id/uploads",
      leased({ paths: Type.Array(Type.String(), { maxItems: 10_000 }) }),
      async (request) => ({ urls: await hub.uploadUrls(leaseOf(request), request.body.paths) }),
    );

    app.post("/jobs/:id/release", leased({}), async (request) => ({
      released: await hub.release(request.instance!, leaseOf(request)),
    }));

    app.post("/jobs/:id/finish", leased(FinishFields), async (request) => {
      const job = await hub.finish(request.instance!, leaseOf(request), finishOutcome(request.body));
      return { status: job.status };
    });

    app.post(
      "/finish",
      {
        onRequest: authenticate,
        schema: {
          tags: ["agent"],
          description: "Ends several attempts in one transaction, each with its unshipped log entries",
          body: Type.Object({
            items: Type.Array(
              Type.Object({
                job_id: Type.String({ minLength: 1 }),
                ...Lease,
                ...FinishFields,
                logs: Type.Optional(
                  Type.Object({
                    attempt: Type.Integer({ minimum: 1 }),
                    entries: Type.Array(LogEntry, { maxItems: 10_000 }),
                  }),
                ),
              }),
              { minItems: 1, maxItems: 1_000 },
            ),
          }),
        },
      },
      async (request) => ({
        items: await hub.finishMany(
          request.instance!,
          request.body.items.map((item) => ({
            lease: { jobId: item.job_id, leaseToken: item.lease_token },
            outcome: finishOutcome(item),
            ...(item.logs ? { logs: item.logs } : {}),
          })),
        ),
      }),
    );
  };
}
