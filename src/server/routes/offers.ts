import { Type, type TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/context.ts";
import { HISTORY_DAYS, launchHistory } from "../../app/machines.ts";
import { badRequest } from "../../domain/errors.ts";
import { LIVE_STATES } from "../../domain/instance.ts";
import { MARKET_HISTORY_DAYS, type OfferQuery } from "../../domain/offers.ts";
import {
  computeInstanceView,
  launchAttemptView,
  machineView,
  marketPointView,
  marketRowView,
  offerView,
} from "../views.ts";

const OffersQuery = Type.Object({
  gpu: Type.Optional(
    Type.String({ minLength: 1, maxLength: 100, description: "GPU type, e.g. RTX4090 or 'RTX 4090'" }),
  ),
  min_gpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  min_gpu_memory: Type.Optional(Type.Number({ minimum: 0, description: "GB of memory per GPU" })),
  max_price: Type.Optional(Type.Number({ minimum: 0, description: "USD per hour for the whole machine" })),
  spot: Type.Optional(Type.Boolean({ description: "true: spot only; false: on-demand only; absent: both" })),
  provider: Type.Optional(Type.String({ minLength: 1, maxLength: 50 })),
});

/** Live offers of every configured provider, the market they make, and how launches went. */
export function offerRoutes(app: FastifyInstance, ctx: AppContext) {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.get("/offers", { schema: { tags: ["offers"], querystring: OffersQuery } }, async (request) => {
    const q = request.query;
    if (q.provider !== undefined && !ctx.offers.providers.includes(q.provider)) {
      throw badRequest(
        "unknown_provider",
        `Provider "${q.provider}" is not configured here; configured: ${ctx.offers.providers.join(", ")}`,
      );
    }
    const query: OfferQuery = {
      ...(q.gpu !== undefined ? { gpu: q.gpu } : {}),
      ...(q.min_gpus !== undefined ? { minGpus: q.min_gpus } : {}),
      ...(q.min_gpu_memory !== undefined ? { minGpuMemoryGb: q.min_gpu_memory } : {}),
      ...(q.max_price !== undefined ? { maxPricePerHour: q.max_price } : {}),
      ...(q.spot !== undefined ? { spot: q.spot } : {}),
      ...(q.provider !== undefined ? { provider: q.provider } : {}),
    };
    const { offers, failures } = await ctx.offers.search(query);
    const now = ctx.now();
    return {
      offers: offers.map((offer) => offerView(offer, now)),
      providers: ctx.offers.providers,
      failures,
    };
  });

  api.get(
    "/instances",
    {
      schema: {
        tags: ["offers"],
        description:
          "This org's instances: the live ones (what is billing now, and at what hourly price), or with all=true also those ended in the last 24 h",
        querystring: Type.Object({ all: Type.Optional(Type.Boolean({ default: false })) }),
      },
    },
    async (request) => {
      const now = ctx.now();
      const instances = await ctx.store.listInstances({
        orgId: request.orgId,
        ...(request.query.all ? { since: now - 86_400_000 } : { states: LIVE_STATES }),
      });
      const live = instances.filter((i) => i.state !== "terminated");
      const perHour = (of: typeof live) =>
        Math.round(of.reduce((sum, i) => sum + (i.pricePerHour ?? 0), 0) * 1e4) / 1e4;
      return {
        instances: instances.map((instance) => computeInstanceView(instance, now)),
        live: live.length,
        // What the live instances bill together, as their providers reported it at launch.
        price_per_hour: perHour(live),
        // The deployment's org pays the clouds: beside each, what the provider itself says it bills now.
        spend:
          request.orgId === ctx.defaultOrgId
            ? await Promise.all(
                ctx.providers
                  .filter((provider) => provider.capabilities.reportsSpend)
                  .map(async (provider) => ({
                    provider: provider.name,
                    recorded_per_hour: perHour(live.filter((i) => i.provider === provider.name)),
                    reported_per_hour: await provider.spendPerHour!().then(
                      (spend) => Math.round(spend * 1e4) / 1e4,
                      () => null,
                    ),
                  })),
              )
            : [],
      };
    },
  );

  api.get(
    "/machines/history",
    {
      schema: {
        tags: ["offers"],
        querystring: Type.Object({
          provider: Type.Optional(Type.String({ minLength: 1, maxLength: 50 })),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
        }),
      },
    },
    async (request) => {
      const { machines, attempts } = await launchHistory(ctx, request.orgId, request.query.provider);
      return {
        days: HISTORY_DAYS,
        policy: {
          min_attempts: ctx.config.machinePolicy.minAttempts,
          min_success_rate: ctx.config.machinePolicy.minSuccessRate,
          skip_hours: ctx.config.machinePolicy.skipMs / 3600_000,
        },
        machines: machines.map(machineView),
        attempts: attempts.slice(0, request.query.limit ?? 100).map(launchAttemptView),
      };
    },
  );

  api.get(
    "/spot/market",
    {
      schema: {
        tags: ["offers"],
        description:
          "Per GPU type, the price spread per GPU-hour now (on-demand and spot), and its history from periodic snapshots",
        querystring: Type.Object({
          history_days: Type.Optional(Type.Integer({ minimum: 0, maximum: MARKET_HISTORY_DAYS })),
        }),
      },
    },
    async (request) => {
      const { rows, failures } = await ctx.offers.market();
      const days = request.query.history_days ?? 7;
      const points = await ctx.store.listMarketPoints(request.orgId, ctx.now() - days * 86_400_000);
      const history = Map.groupBy(points, (point) => point.gpu);
      return {
        gpus: rows.map((row) => ({
          ...marketRowView(row),
          history: (history.get(row.gpu) ?? []).map(marketPointView),
        })),
        history_days: days,
        snapshot_every_s: ctx.config.marketSnapshotS,
        providers: ctx.offers.providers,
        failures,
      };
    },
  );
}
