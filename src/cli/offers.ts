import type { Command } from "commander";
import { HangarClient } from "./client.ts";
import { integer, nonNegative, print } from "./options.ts";

export interface OfferView {
  provider: string;
  id: string;
  gpu: string;
  gpu_count: number;
  gpu_memory_gb: number;
  vcpus: number | null;
  memory_gb: number | null;
  region: string | null;
  spot: boolean;
  price_per_hour: number;
  reliability: number | null;
  age_s: number;
}

interface MachineView {
  provider: string;
  machine_id: string;
  attempts: number;
  ready: number;
  failed: number;
  success_rate: number | null;
  median_time_to_ready_s: number | null;
  last_error: string | null;
  skipped_until: string | null;
}

interface Failure {
  provider: string;
  message: string;
}

interface PriceView {
  offers: number;
  min: number;
  median: number;
  p90: number;
}

const price = (value: number) => `$${value.toFixed(3)}/h`;

/** 45s, 12m, 3h05m. */
function age(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")}m`;
}

interface ProvidersView {
  providers: {
    name: string;
    configured_by: string | null;
    key_hint: string | null;
    updated_at: string | null;
  }[];
  in_use: string[];
}

function printProviders(view: ProvidersView): void {
  print("PROVIDER     IN USE  CREDENTIALS");
  for (const p of view.providers) {
    const from =
      p.configured_by === "org"
        ? `this org's key ${p.key_hint} (set ${p.updated_at})`
        : p.configured_by === "server"
          ? "the server's"
          : "none";
    print(`${p.name.padEnd(12)} ${(view.in_use.includes(p.name) ? "yes" : "no").padEnd(7)} ${from}`);
  }
}

interface InstanceView {
  id: string;
  provider: string;
  state: string;
  gpus: { name: string }[];
  price_per_hour: number | null;
  age_s: number;
  termination_reason: string | null;
}

function warnFailures(failures: Failure[]): void {
  for (const failure of failures) process.stderr.write(`warning: ${failure.provider}: ${failure.message}\n`);
}

export function addOfferCommands(program: Command): void {
  program
    .command("offers")
    .description("live offers of every configured provider, cheapest first")
    .option("--gpu <name>", "GPU type, e.g. RTX4090 or 'RTX 4090'")
    .option("--min-gpus <n>", "at least this many GPUs", integer)
    .option("--min-gpu-memory <gb>", "at least this much memory per GPU", nonNegative)
    .option("--max-price <usd>", "at most this price per hour for the machine", nonNegative)
    .option("--provider <name>", "one provider only (local, runpod, vastai, tensordock)")
    .option("--spot", "spot (interruptible) offers only")
    .option("--on-demand", "on-demand offers only")
    .option("--limit <n>", "show at most this many", integer, 20)
    .option("--json", "print a JSON array of offers")
    .action(
      async (options: {
        gpu?: string;
        minGpus?: number;
        minGpuMemory?: number;
        maxPrice?: number;
        provider?: string;
        spot?: boolean;
        onDemand?: boolean;
        limit: number;
        json?: boolean;
      }) => {
        if (options.spot && options.onDemand) throw new Error("--spot and --on-demand exclude each other");
        const query = new URLSearchParams();
        if (options.gpu) query.set("gpu", options.gpu);
        if (options.minGpus !== undefined) query.set("min_gpus", String(options.minGpus));
        if (options.minGpuMemory !== undefined) query.set("min_gpu_memory", String(options.minGpuMemory));
        if (options.maxPrice !== undefined) query.set("max_price", String(options.maxPrice));
        if (options.provider) query.set("provider", options.provider);
        if (options.spot) query.set("spot", "true");
        if (options.onDemand) query.set("spot", "false");
        const answer = await HangarClient.fromEnv().request<{ offers: OfferView[]; failures: Failure[] }>(
          "GET",
          `/api/v1/offers?${query}`,
        );
        warnFailures(answer.failures);
        if (options.json) return print(answer.offers);
        if (answer.offers.length === 0) return print("no offers match");
        print("PROVIDER  GPU          COUNT  MEM/GPU  vCPU  RAM    REGION        KIND       PRICE       AGE");
        for (const o of answer.offers.slice(0, options.limit)) {
          print(
            [
              o.provider.padEnd(8),
              o.gpu.padEnd(12),
              String(o.gpu_count).padStart(5),
              `${o.gpu_memory_gb} GB`.padStart(7),
              String(o.vcpus ?? "-").padStart(5),
              (o.memory_gb === null ? "-" : `${o.memory_gb} GB`).padStart(6),
              (o.region ?? "-").slice(0, 12).padEnd(12),
              (o.spot ? "spot" : "on-demand").padEnd(9),
              price(o.price_per_hour).padStart(11),
              `${o.age_s}s`.padStart(5),
            ].join("  "),
          );
        }
        if (answer.offers.length > options.limit) {
          print(`… ${answer.offers.length - options.limit} more (--limit, or --json for all)`);
        }
      },
    );

  program
    .command("market")
    .description("price per GPU-hour by GPU type across providers: min, median and p90, on-demand and spot")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const answer = await HangarClient.fromEnv().request<{
        gpus: { gpu: string; on_demand: PriceView | null; spot: PriceView | null; providers: string[] }[];
        failures: Failure[];
      }>("GET", "/api/v1/spot/market");
      warnFailures(answer.failures);
      if (options.json) return print(answer.gpus);
      const spread = (p: PriceView | null) =>
        p ? `${price(p.min)} / ${price(p.median)} / ${price(p.p90)} (${p.offers})` : "-";
      print("GPU          ON-DEMAND min / median / p90 (offers)          SPOT min / median / p90 (offers)");
      for (const row of answer.gpus) {
        print(`${row.gpu.padEnd(12)} ${spread(row.on_demand).padEnd(46)} ${spread(row.spot)}`);
      }
    });

  const providers = program
    .command("providers")
    .description(
      "providers in use, and where each cloud's credentials come from (the server's environment or this org)",
    )
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const answer = await HangarClient.fromEnv().request<ProvidersView>("GET", "/api/v1/providers");
      if (options.json) return print(answer);
      printProviders(answer);
    });
  providers
    .command("set <name>")
    .description(
      "store this org's API key for a cloud (runpod, vastai, tensordock), read from standard input",
    )
    .option("--url <url>", "another endpoint for it (a proxy, an emulator)")
    .action(async (name: string, options: { url?: string }) => {
      // Read from stdin, never from the command line, where other users' `ps` and the shell history see it.
      if (process.stdin.isTTY) process.stderr.write(`API key for ${name}: `);
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const apiKey = Buffer.concat(chunks).toString("utf8").trim();
      const answer = await HangarClient.fromEnv().request<ProvidersView>(
        "PUT",
        `/api/v1/providers/${encodeURIComponent(name)}/credentials`,
        { api_key: apiKey, ...(options.url ? { api_url: options.url } : {}) },
      );
      printProviders(answer);
    });
  providers
    .command("unset <name>")
    .description("delete this org's stored API key for a cloud (the server's environment applies again)")
    .action(async (name: string) => {
      await HangarClient.fromEnv().request(
        "DELETE",
        `/api/v1/providers/${encodeURIComponent(name)}/credentials`,
      );
      print(`${name}: stored credentials deleted`);
    });

  program
    .command("instances")
    .description("this org's live instances: provider, GPUs, state, age and what they bill per hour")
    .option("--all", "also those ended in the last 24 h")
    .option("--json", "print JSON: {instances, live, price_per_hour, spend}")
    .action(async (options: { all?: boolean; json?: boolean }) => {
      const answer = await HangarClient.fromEnv().request<{
        instances: InstanceView[];
        live: number;
        price_per_hour: number;
        spend: { provider: string; recorded_per_hour: number; reported_per_hour: number | null }[];
      }>("GET", `/api/v1/instances${options.all ? "?all=true" : ""}`);
      if (options.json) return print(answer);
      if (answer.instances.length === 0 && answer.spend.every((s) => !s.reported_per_hour))
        return print("no instances");
      print("INSTANCE                              PROVIDER    STATE         GPUS          PRICE/H   AGE");
      for (const i of answer.instances) {
        const gpus = i.gpus.length === 0 ? "-" : `${i.gpus.length}x ${i.gpus[0]!.name}`;
        print(
          `${i.id.padEnd(37)} ${i.provider.padEnd(11)} ${i.state.padEnd(13)} ${gpus.padEnd(11)} ${price(i.price_per_hour ?? 0).padStart(10)}   ${age(i.age_s)}`,
        );
        if (i.termination_reason) print(`${"".padEnd(38)}ended: ${i.termination_reason}`);
      }
      print(`${answer.live} live, billing ${price(answer.price_per_hour)}`);
      for (const s of answer.spend) {
        const reported = s.reported_per_hour === null ? "unavailable" : price(s.reported_per_hour);
        print(
          `  ${s.provider}: ${price(s.recorded_per_hour)} recorded at launch, ${reported} by its own account`,
        );
      }
    });

  program
    .command("machines")
    .description(
      "launch history per machine: attempts, success rate, time to ready, and machines being skipped",
    )
    .option("--provider <name>", "one provider only")
    .option("--json", "print JSON: {machines, attempts}")
    .action(async (options: { provider?: string; json?: boolean }) => {
      const query = options.provider ? `?provider=${encodeURIComponent(options.provider)}` : "";
      const answer = await HangarClient.fromEnv().request<{
        days: number;
        machines: MachineView[];
        attempts: unknown[];
      }>("GET", `/api/v1/machines/history${query}`);
      if (options.json) return print(answer);
      if (answer.machines.length === 0) return print(`no launches in the last ${answer.days} days`);
      print("PROVIDER    MACHINE                 ATTEMPTS  READY  FAILED  SUCCESS  READY IN  STATUS");
      for (const m of answer.machines) {
        const rate = m.success_rate === null ? "-" : `${Math.round(m.success_rate * 100)}%`;
        const readyIn = m.median_time_to_ready_s === null ? "-" : `${m.median_time_to_ready_s.toFixed(1)}s`;
        const status = m.skipped_until ? `skipped until ${m.skipped_until}` : "ok";
        print(
          `${m.provider.padEnd(10)}  ${m.machine_id.slice(0, 22).padEnd(22)}  ${String(m.attempts).padStart(8)}  ${String(m.ready).padStart(5)}  ${String(m.failed).padStart(6)}  ${rate.padStart(7)}  ${readyIn.padStart(8)}  ${status}`,
        );
        if (m.last_error && m.failed > 0) print(`            last error: ${m.last_error}`);
      }
    });
}
