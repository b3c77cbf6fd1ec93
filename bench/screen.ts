/**
 * Batch screens: submitting a 100,000-ligand batch (SQLite and PostgreSQL), reading a batch while its
 * children complete, Vina throughput through Hangar against vina run directly, and what packing saves
 * for a model that loads slowly. Prints one JSON object on stdout; progress goes to stderr.
 *
 *   node bench/screen.ts [--ligands 100000] [--vina-ligands 20] [--exhaustiveness 8] [--skip-postgres]
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs, promisify } from "node:util";
import pg from "pg";
import { HangarClient } from "../src/cli/client.ts";
import type { BatchView } from "../src/cli/predictions.ts";
import { loadConfig } from "../src/config.ts";
import { newId } from "../src/domain/ids.ts";
import { boltz2Spec } from "../src/models/boltz2/spec.ts";
import { cleanReceptorPdb } from "../src/models/vina/runner.ts";
import { type RunningServer, startServer } from "../src/server/server.ts";
import { openStore } from "../src/store/index.ts";
import { machine, percentile, progress, round, secondsSince } from "./lib.ts";

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    ligands: { type: "string", default: "100000" },
    "vina-ligands": { type: "string", default: "20" },
    exhaustiveness: { type: "string", default: "8" },
    "skip-postgres": { type: "boolean", default: false },
  },
});
const BIG = Number(args.ligands);
const VINA_LIGANDS = Number(args["vina-ligands"]);
const EXHAUSTIVENESS = Number(args.exhaustiveness);
const API_KEY = "hgr_bench_key_0123456789abcdef";
const RECEPTOR = "/usr/share/pymol/data/tut/1hpv.pdb";
const PG_URL = process.env.HANGAR_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** Drug-like SMILES with variety: substituted aromatics built from a few scaffolds and groups. */
function ligandSmiles(count: number): { name: string; smiles: string }[] {
  const scaffolds = ["c1ccc(cc1)", "c1ccc2ccccc2c1", "c1ccncc1", "C1CCN(CC1)", "c1cc(oc1)", "c1ccc(nc1)"];
  const groups = ["C(=O)O", "OC", "N", "C(F)(F)F", "Cl", "C(=O)N", "S(=O)(=O)N", "CC(C)C", "O", "C#N"];
  const ligands = [];
  for (let i = 0; i < count; i++) {
    const a = scaffolds[i % scaffolds.length]!;
    const g1 = groups[Math.floor(i / scaffolds.length) % groups.length]!;
    const g2 = groups[Math.floor(i / (scaffolds.length * groups.length)) % groups.length]!;
    const chain = "C".repeat(1 + (Math.floor(i / 600) % 6));
    ligands.push({ name: `cpd-${i}`, smiles: `${chain}${a}${g1}${g2}` });
  }
  return ligands;
}

async function startBenchServer(env: {
  databaseUrl?: string;
  schema?: string;
}): Promise<{ server: RunningServer; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-screen-"));
  const config = loadConfig(
    { ...process.env, HANGAR_LOG_LEVEL: process.env.HANGAR_BENCH_LOG_LEVEL ?? "silent" },
    {
      dataDir: dir,
      port: 0,
      bootstrapApiKey: API_KEY,
      databaseUrl: env.databaseUrl,
      databaseSchema: env.schema,
    },
  );
  return { server: await startServer(config), dir };
}

/** Peak resident memory of this process so far (Linux VmHWM), MiB. */
async function peakRssMiB(): Promise<number> {
  const status = await readFile("/proc/self/status", "utf8");
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return round(kib / 1024, 0);
}

/** Submits the big batch; times acceptance and samples GET /batches/{id} while children complete. */
async function bigBatch(dialect: "sqlite" | "postgres") {
  let schema: string | undefined;
  let admin: pg.Client | undefined;
  if (dialect === "postgres") {
    schema = `bench_screen_${Date.now()}`;
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`create schema ${schema}`);
  }
  const { server, dir } = await startBenchServer(
    dialect === "postgres" ? { databaseUrl: PG_URL, ...(schema ? { schema } : {}) } : {},
  );
  // No instance may take the children: the completions below come from a simulated agent.
  await server.scheduler.stop();
  try {
    const client = new HangarClient(server.url, API_KEY);
    const receptor = await client.uploadDataset([{ path: RECEPTOR, name: "1hpv.pdb" }]);
    const ligands = ligandSmiles(BIG);
    const csv = `name,smiles\n${ligands.map((l) => `${l.name},${l.smiles}`).join("\n")}\n`;
    const file = join(dir, "ligands.csv");
    await writeFile(file, csv);
    const dataset = await client.uploadDataset([{ path: file, name: "ligands.csv" }]);
    progress(`${dialect}: submitting ${BIG} ligands`);
    const started = performance.now();
    const batch = await client.request<BatchView>("POST", "/api/v1/predict/batch", {
      model: "vina",
      receptor: receptor.id,
      ligands_dataset: dataset.id,
      parameters: { box_ligand: "478" },
      max_concurrent: 100_000,
      // A generated library has some chemically impossible rows; they become failed children.
      skip_invalid: true,
    });
    const acceptedS = secondsSince(started);
    progress(`${dialect}: accepted in ${acceptedS} s`);

    // Children complete through the store as an agent's finish would, while a reader polls the batch.
    const store = server.ctx.store;
    const latencies: number[] = [];
    let completing = true;
    const reader = (async () => {
      while (completing) {
        const t = performance.now();
        await client.request("GET", `/api/v1/batches/${batch.id}`);
        latencies.push(performance.now() - t);
        await sleep(20);
      }
    })();
    const finishStarted = performance.now();
    let finished = 0;
    const toFinish = Math.min(BIG, 5_000);
    while (finished < toFinish) {
      const claimed = await store.claimBatchChildren({
        owner: "bench-agent",
        models: ["vina"],
        limitFor: () => 50,
        leaseMs: 60_000,
        now: Date.now(),
      });
      if (!claimed) break;
      for (const job of claimed.jobs) {
        const score = -5 - Math.random() * 5;
        await store.finish(
          { jobId: job.id, leaseToken: job.leaseToken! },
          { status: "succeeded", score, result: { score } },
          Date.now(),
        );
        finished++;
      }
    }
    const completionsPerS = round(finished / ((performance.now() - finishStarted) / 1000), 0);
    completing = false;
    await reader;
    latencies.sort((a, b) => a - b);
    const view = await client.request<BatchView>("GET", `/api/v1/batches/${batch.id}`);
    await client.request("POST", `/api/v1/batches/${batch.id}/cancel`);
    return {
      ligands: BIG,
      accepted_s: acceptedS,
      target_accepted_s: 10,
      peak_rss_mib: await peakRssMiB(),
      target_peak_rss_mib: 400,
      get_batch_while_completing_ms: {
        samples: latencies.length,
        p50: round(percentile(latencies, 50), 2),
        p99: round(percentile(latencies, 99), 2),
        max: round(latencies.at(-1) ?? 0, 2),
        target_ms: 5,
      },
      completions_during_reads: finished,
      completions_per_s: completionsPerS,
      counters_after: view.progress,
    };
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
    if (admin && schema) {
      await admin.query(`drop schema ${schema} cascade`);
      await admin.end();
    }
  }
}

/** The same prepared inputs docked by vina directly, one single-threaded process per core, as a shell loop would. */
async function vinaDirect(
  ligands: { name: string; smiles: string }[],
  box: { center: number[]; size: number[] },
): Promise<{ wall_s: number; ligands_per_hour: number }> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-vina-"));
  try {
    const clean = join(dir, "receptor.pdb");
    await writeFile(clean, cleanReceptorPdb(await readFile(RECEPTOR, "utf8")).text);
    await run("obabel", [clean, "-xr", "-h", "-O", join(dir, "receptor.pdbqt")]);
    for (const [i, ligand] of ligands.entries()) {
      await run("obabel", [`-:${ligand.smiles}`, "--gen3d", "-h", "-O", join(dir, `l${i}.pdbqt`)]);
    }
    const started = performance.now();
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < ligands.length; i = next++) {
        await run("vina", [
          "--receptor",
          join(dir, "receptor.pdbqt"),
          "--ligand",
          join(dir, `l${i}.pdbqt`),
          "--center_x",
          String(box.center[0]),
          "--center_y",
          String(box.center[1]),
          "--center_z",
          String(box.center[2]),
          "--size_x",
          String(box.size[0]),
          "--size_y",
          String(box.size[1]),
          "--size_z",
          String(box.size[2]),
          "--exhaustiveness",
          String(EXHAUSTIVENESS),
          "--seed",
          "42",
          "--cpu",
          "1",
          "--out",
          join(dir, `o${i}.pdbqt`),
        ]);
      }
    };
    await Promise.all(Array.from({ length: availableParallelism() }, lane));
    const wall = (performance.now() - started) / 1000;
    return { wall_s: round(wall, 1), ligands_per_hour: round((ligands.length / wall) * 3600, 0) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function vinaThroughHangar(ligands: { name: string; smiles: string }[]) {
  const { server, dir } = await startBenchServer({});
  try {
    const client = new HangarClient(server.url, API_KEY);
    const receptor = await client.uploadDataset([{ path: RECEPTOR, name: "1hpv.pdb" }]);
    const started = performance.now();
    const submitted = await client.request<BatchView & { parameters: Record<string, number> }>(
      "POST",
      "/api/v1/predict/batch",
      {
        model: "vina",
        receptor: receptor.id,
        ligands,
        parameters: { box_ligand: "478", exhaustiveness: EXHAUSTIVENESS, seed: 42 },
      },
    );
    let view: BatchView;
    for (;;) {
      view = await client.request<BatchView>("GET", `/api/v1/batches/${submitted.id}`);
      if (["succeeded", "failed", "cancelled"].includes(view.status)) break;
      await sleep(200);
    }
    const wall = (performance.now() - started) / 1000;
    const p = submitted.parameters;
    return {
      result: {
        wall_s: round(wall, 1),
        ligands_per_hour: round((view.progress.completed / wall) * 3600, 0),
        completed: view.progress.completed,
        best: view.score.best,
      },
      box: { center: [p.center_x!, p.center_y!, p.center_z!], size: [p.size_x!, p.size_y!, p.size_z!] },
    };
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Billed instance-seconds per prediction for 100 ligands with Boltz-2's published costs (25 s model
 * load, 6 s per ligand): claims go through the real store with the model's packing, on a virtual clock.
 */
async function packing() {
  const LOAD_S = 25;
  const PER_LIGAND_S = 6;
  const LIGANDS = 100;
  const simulate = async (perClaim: number) => {
    const dir = await mkdtemp(join(tmpdir(), "hangar-bench-pack-"));
    const store = openStore({ databaseUrl: undefined, schema: undefined, dataDir: dir });
    try {
      await store.migrate();
      await store.ensureOrg("org_bench", "bench", 0);
      const batchId = newId("batch");
      await store.insertBatch(
        {
          id: batchId,
          orgId: "org_bench",
          name: "pack",
          model: "boltz2",
          modelVersion: "2",
          priority: 0,
          maxConcurrent: LIGANDS,
          score: { name: "affinity_pred_value", unit: "", better: "lower" },
          spec: {},
          createdAt: 0,
        },
        Array.from({ length: LIGANDS }, () => ({ id: newId("job"), spec: {} })),
        { maxAttempts: 1, backoffMinMs: 0, backoffMaxMs: 0, timeoutMs: 1e9 },
      );
      let billed = 0;
      let instances = 0;
      for (;;) {
        const claimed = await store.claimBatchChildren({
          owner: `instance-${instances}`,
          models: ["boltz2"],
          limitFor: () => perClaim,
          leaseMs: 1e9,
          now: 1,
        });
        if (!claimed) break;
        instances++;
        // Each claim is one instance's life: it boots, loads the model once, predicts what it took.
        billed += LOAD_S + PER_LIGAND_S * claimed.jobs.length;
        for (const job of claimed.jobs)
          await store.finish({ jobId: job.id, leaseToken: job.leaseToken! }, { status: "succeeded" }, 2);
      }
      return { instances, billed_instance_s: billed, per_prediction_s: round(billed / LIGANDS, 2) };
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  };
  const packed = await simulate(boltz2Spec.packing.perProcess);
  const oneEach = await simulate(1);
  return {
    model_load_s: LOAD_S,
    per_ligand_s: PER_LIGAND_S,
    ligands: LIGANDS,
    packed: { per_claim: boltz2Spec.packing.perProcess, ...packed },
    one_instance_per_ligand: oneEach,
    saving_ratio: round(oneEach.billed_instance_s / packed.billed_instance_s, 2),
  };
}

const result: Record<string, unknown> = { benchmark: "screen", machine: machine() };
result.packing = await packing();
progress(`packing: ${JSON.stringify(result.packing)}`);
result.submit_sqlite = await bigBatch("sqlite");
if (!args["skip-postgres"]) result.submit_postgres = await bigBatch("postgres");
const vinaLigands = ligandSmiles(VINA_LIGANDS * 7)
  .filter((_, i) => i % 7 === 0)
  .slice(0, VINA_LIGANDS);
progress(`vina: ${VINA_LIGANDS} ligands through Hangar (exhaustiveness ${EXHAUSTIVENESS})`);
const hangar = await vinaThroughHangar(vinaLigands);
progress(`vina: the same ligands directly`);
const direct = await vinaDirect(vinaLigands, hangar.box);
result.vina = {
  ligands: VINA_LIGANDS,
  exhaustiveness: EXHAUSTIVENESS,
  processes_side_by_side: availableParallelism(),
  hangar: hangar.result,
  direct,
  ratio_hangar_over_direct: round(hangar.result.ligands_per_hour / direct.ligands_per_hour, 2),
  target_ratio: 0.9,
  note: "Hangar's time includes submit, receptor and ligand preparation and uploads; the direct loop's excludes preparation",
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(0);
