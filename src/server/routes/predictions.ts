import { type Static, Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import { ARTIFACTS, batchArea, batchRows, resultsCsv } from "../../app/batch-results.ts";
import type { AppContext } from "../../app/context.ts";
import {
  type BatchRequest,
  getBatch,
  getPredictionJob,
  type PredictRequest,
  submitBatch,
  submitPrediction,
} from "../../app/predictions.ts";
import { runArea, writeRunLog } from "../../app/runs.ts";
import { isBatchFinished } from "../../domain/batch.ts";
import { conflict } from "../../domain/errors.ts";
import { isTerminal, JOB_STATUSES } from "../../domain/job.ts";
import type { JsonObject } from "../../domain/json.ts";
import { MODEL_SPECS } from "../../models/registry.ts";
import { batchView, predictionView } from "../views.ts";

const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });
const Parameters = Type.Record(Type.String(), Type.Unknown(), { description: "model parameters" });
const Target = {
  model: Type.String({ minLength: 1, description: "vina, boltz2 or alphafold3 (GET /models)" }),
  protein_sequence: Type.Optional(Type.String({ minLength: 1, maxLength: 20_000 })),
  receptor: Type.Optional(Type.String({ minLength: 1, description: "dataset id holding a .pdb/.pdbqt" })),
  msa: Type.Optional(
    Type.String({ minLength: 1, description: "dataset id holding the protein's precomputed MSA (.a3m)" }),
  ),
  parameters: Type.Optional(Parameters),
  priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
};
const PredictBody = Type.Object(
  {
    ...Target,
    ligand_smiles: Type.String({ minLength: 1, maxLength: 10_000 }),
    ligand_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);
const BatchBody = Type.Object(
  {
    ...Target,
    batch_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    ligands: Type.Optional(
      Type.Array(
        Type.Object(
          {
            smiles: Type.String({ maxLength: 10_000 }),
            name: Type.Optional(Type.String({ maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
        { maxItems: 1_000_000 },
      ),
    ),
    ligands_dataset: Type.Optional(Type.String({ minLength: 1 })),
    max_concurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    skip_invalid: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
const ResultsQuery = Type.Object({
  sort: Type.Optional(Type.Union([Type.Literal("rank"), Type.Literal("name"), Type.Literal("score")])),
  order: Type.Optional(Type.Union([Type.Literal("asc"), Type.Literal("desc")])),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  format: Type.Optional(Type.Union([Type.Literal("json"), Type.Literal("csv")])),
});
const ChildrenQuery = Type.Object({
  status: Type.Optional(Type.Union(JOB_STATUSES.map((s) => Type.Literal(s)))),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  cursor: Type.Optional(Type.String({ description: "the next_cursor of the previous page" })),
});

/** Predictions and batch screens (`/api/v1/predict…`, `/jobs`, `/batches`, `/models`). */
export function predictionRoutes(app: FastifyInstance, ctx: AppContext) {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.get("/models", { schema: { tags: ["predictions"] } }, async () => ({
    models: [...MODEL_SPECS.values()].map((spec) => ({
      name: spec.name,
      version: spec.version,
      description: spec.description,
      target: spec.target,
      resources: spec.resources,
      score: spec.score,
      max_ligand_atoms: spec.maxLigandAtoms ?? null,
      parameters: spec.parameters,
    })),
  }));

  api.post("/predict", { schema: { tags: ["predictions"], body: PredictBody } }, async (request, reply) => {
    const body = request.body as Static<typeof PredictBody>;
    const job = await submitPrediction(
      ctx,
      request.principal,
      body as PredictRequest & { parameters?: JsonObject },
    );
    return reply.code(201).send(predictionView(job));
  });

  api.post(
    "/predict/batch",
    { schema: { tags: ["predictions"], body: BatchBody } },
    async (request, reply) => {
      const body = request.body as Static<typeof BatchBody>;
      const batch = await submitBatch(
        ctx,
        request.principal,
        body as BatchRequest & { parameters?: JsonObject },
      );
      return reply.code(201).send(batchView(batch, ctx.now()));
    },
  );

  api.get("/jobs/:id", { schema: { tags: ["predictions"], params: Id } }, async (request) =>
    predictionView(await getPredictionJob(ctx, request.orgId, request.params.id)),
  );

  api.get("/jobs/:id/download", { schema: { tags: ["predictions"], params: Id } }, async (request) => {
    const job = await getPredictionJob(ctx, request.orgId, request.params.id);
    const ttl = ctx.config.signedUrlTtlS;
    let files = await ctx.blobs.list(`${runArea(job.id)}/`);
    // A batch child's run log is written on its first download rather than as it ends.
    if (isTerminal(job.status) && !files.some((f) => f.key === `${runArea(job.id)}/logs.txt`)) {
      await writeRunLog(ctx, job);
      files = await ctx.blobs.list(`${runArea(job.id)}/`);
    }
    return {
      id: job.id,
      expires_in_s: ttl,
      files: await Promise.all(
        files.map(async (f) => ({
          path: f.key.slice(runArea(job.id).length + 1),
          size: f.size,
          url: await ctx.blobs.signedUrl(f.key, "GET", ttl),
        })),
      ),
    };
  });

  api.get("/batches", { schema: { tags: ["predictions"] } }, async (request) => ({
    batches: (await ctx.store.listBatches(request.orgId, 100)).map((b) => batchView(b, ctx.now())),
  }));

  api.get("/batches/:id", { schema: { tags: ["predictions"], params: Id } }, async (request) =>
    batchView(await getBatch(ctx, request.orgId, request.params.id), ctx.now()),
  );

  api.get(
    "/batches/:id/results",
    { schema: { tags: ["predictions"], params: Id, querystring: ResultsQuery } },
    async (request, reply) => {
      const batch = await getBatch(ctx, request.orgId, request.params.id);
      let rows = await batchRows(ctx, batch);
      const { sort = "rank", order = "asc", limit, format = "json" } = request.query;
      if (sort === "name") rows.sort((a, b) => a.name.localeCompare(b.name));
      if (sort === "score")
        rows.sort((a, b) => (a.score ?? Number.POSITIVE_INFINITY) - (b.score ?? Number.POSITIVE_INFINITY));
      if (order === "desc") rows.reverse();
      if (limit !== undefined) rows = rows.slice(0, limit);
      if (format === "csv") return reply.type("text/csv; charset=utf-8").send(resultsCsv(rows));
      return {
        batch_id: batch.id,
        score: { name: batch.scoreName, unit: batch.scoreUnit, better: batch.scoreBetter },
        results: rows,
      };
    },
  );

  api.get(
    "/batches/:id/children",
    { schema: { tags: ["predictions"], params: Id, querystring: ChildrenQuery } },
    async (request) => {
      const batch = await getBatch(ctx, request.orgId, request.params.id);
      const limit = request.query.limit ?? 100;
      const page = await ctx.store.listBatchChildren({
        orgId: request.orgId,
        batchId: batch.id,
        limit,
        ...(request.query.status ? { status: request.query.status } : {}),
        ...(request.query.cursor ? { after: request.query.cursor } : {}),
      });
      return {
        children: page.map(predictionView),
        next_cursor: page.length === limit ? page.at(-1)!.id : null,
      };
    },
  );

  api.post("/batches/:id/cancel", { schema: { tags: ["predictions"], params: Id } }, async (request) => {
    const current = await getBatch(ctx, request.orgId, request.params.id);
    if (isBatchFinished(current.status)) {
      throw conflict(
        "batch_finished",
        `Batch ${current.id} already ended (${current.status}); nothing to cancel`,
        {
          status: current.status,
        },
      );
    }
    const batch = await ctx.store.requestBatchCancel(request.orgId, current.id, ctx.now());
    ctx.events.emit(`batch:${current.id}`);
    return batchView(batch!, ctx.now());
  });

  api.get("/batches/:id/download", { schema: { tags: ["predictions"], params: Id } }, async (request) => {
    const batch = await getBatch(ctx, request.orgId, request.params.id);
    const ttl = ctx.config.signedUrlTtlS;
    const artifacts = [];
    for (const name of ARTIFACTS) {
      const key = `${batchArea(batch.id)}/${name}`;
      const object = await ctx.blobs.stat(key);
      if (object)
        artifacts.push({ path: name, size: object.size, url: await ctx.blobs.signedUrl(key, "GET", ttl) });
    }
    const final =
      batch.finishedAt !== null && batch.artifactsAt !== null && batch.artifactsAt >= batch.finishedAt;
    return {
      id: batch.id,
      status: batch.status,
      // While the batch runs (and briefly after) the artifacts are a snapshot, rewritten as it goes.
      final,
      written_at: batch.artifactsAt === null ? null : new Date(batch.artifactsAt).toISOString(),
      expires_in_s: ttl,
      artifacts,
    };
  });
}
