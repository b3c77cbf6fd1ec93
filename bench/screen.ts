/**
 * Batch screens: submitting a 100,000-ligand batch (SQLite and PostgreSQL), reading a batch while its
 * children complete, Vina throughput through Hangar against vina run directly, and what packing saves
 * for a model that loads slowly. Prints one JSON object on stdout; progress goes to stderr.
 *
 *   node bench/screen.ts [--ligands 100000] [--vina-ligands 20] [--exhaustiveness 8] [--model-seconds 0.25]
 *                        [--fleet-model-seconds 2] [--read-seconds 10] [--skip-sqlite] [--skip-postgres] [--skip-vina]
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
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
import { REPO_ROOT, type RunningServer, startServer } from "../src/server/server.ts";
import { openStore } from "../src/store/index.ts";
import { machine, percentile, progress, round, secondsSince, spawnHangarServer } from "./lib.ts";

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    ligands: { type: "string", default: "100000" },
    "vina-ligands": { type: "string", default: "20" },
    exhaustiveness: { type: "string", default: "8" },
    "model-seconds": { type: "string", default: "0.25" },
    "fleet-model-seconds": { type: "string", default: "2" },
    "read-seconds": { type: "string", default: "10" },
    "skip-sqlite": { type: "boolean", default: false },
    "skip-postgres": { type: "boolean", default: false },
    "skip-vina": { type: "boolean", default: false },
  },
});
const BIG = Number(args.ligands);
const VINA_LIGANDS = Number(args["vina-ligands"]);
const EXHAUSTIVENESS = Number(args.exhaustiveness);
const MODEL_SECONDS = Number(args["model-seconds"]);
const FLEET_MODEL_SECONDS = Number(args["fleet-model-seconds"]);
/** Boltz-2's published time per ligand on one GPU, to say how big a fleet a rate of children ending stands for. */
const BOLTZ2_SECONDS_PER_LIGAND = 6;
const READ_WINDOW_MS = Number(args["read-seconds"]) * 1000;
const API_KEY = "hgr_bench_key_0123456789abcdef";
const RECEPTOR = "/usr/share/pymol/data/tut/1hpv.pdb";
const SEQUENCE =
  "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";
const PG_URL = process.env.HANGAR_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/**
 * A generated library of distinct drug-like SMILES (scaffold × substituents × linker × chain × tail):
 * every row is a different string, so nothing is validated twice. Some combinations are chemically
 * impossible; RDKit rejects those and the batch records them as failed children (skip_invalid).
 */
function ligandSmiles(count: number): { name: string; smiles: string }[] {
  const scaffolds = ["c1ccc(cc1)", "c1ccc2ccccc2c1", "c1ccncc1", "C1CCN(CC1)", "c1cc(oc1)", "c1ccc(nc1)"];
  const groups = ["C(=O)O", "OC", "N", "C(F)(F)F", "Cl", "C(=O)N", "S(=O)(=O)N", "CC(C)C", "O", "C#N"];
  const linkers = ["", "O", "N"];
  const ligands = [];
  for (let i = 0; i < count; i++) {
    let rest = i;
    const pick = <T>(options: readonly T[]): T => {
      const choice = options[rest % options.length]!;
      rest = Math.floor(rest / options.length);
      return choice;
    };
    const scaffold = pick(scaffolds);
    const first = pick(groups);
    const second = pick(groups);
    const linker = pick(linkers);
    const chain = "C".repeat(1 + pick([0, 1, 2, 3, 4, 5, 6, 7]));
    const tail = "C".repeat(rest % 7);
    ligands.push({ name: `cpd-${i}`, smiles: `${chain}${linker}${scaffold}${first}${tail}${second}` });
  }
  return ligands;
}

/** Twenty small drug-like molecules (aspirin's relatives and common drugs) for the Vina comparison. */
const VINA_SET = [
  ["aspirin", "CC(=O)Oc1ccccc1C(=O)O"],
  ["salicylic acid", "O=C(O)c1ccccc1O"],
  ["methyl salicylate", "COC(=O)c1ccccc1O"],
  ["salsalate", "O=C(O)c1ccccc1OC(=O)c1ccccc1O"],
  ["diflunisal", "O=C(O)c1cc(-c2ccc(F)cc2F)ccc1O"],
  ["paracetamol", "CC(=O)Nc1ccc(O)cc1"],
  ["ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"],
  ["4-aminosalicylic acid", "Nc1ccc(C(=O)O)c(O)c1"],
  ["benorilate", "CC(=O)Nc1ccc(OC(=O)c2ccccc2OC(=O)C)cc1"],
  ["caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"],
  ["naproxen", "COc1ccc2cc(ccc2c1)C(C)C(=O)O"],
  ["ketoprofen", "CC(C(=O)O)c1cccc(c1)C(=O)c1ccccc1"],
  ["phenacetin", "CCOc1ccc(NC(C)=O)cc1"],
  ["benzocaine", "CCOC(=O)c1ccc(N)cc1"],
  ["lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C"],
  ["mefenamic acid", "Cc1cccc(Nc2ccccc2C(=O)O)c1C"],
  ["flurbiprofen", "CC(C(=O)O)c1ccc(-c2ccccc2)c(F)c1"],
  ["indoprofen", "CC(C(=O)O)c1ccc(cc1)N1Cc2ccccc2C1=O"],
  ["fenbufen", "OC(=O)CCC(=O)c1ccc(cc1)-c1ccccc1"],
  ["acetanilide", "CC(=O)Nc1ccccc1"],
].map(([name, smiles]) => ({ name: name!, smiles: smiles! }));

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

/** Peak resident memory of a process so far (Linux VmHWM), MiB. */
async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return round(kib / 1024, 0);
}

/**
 * Submits the big batch to a server process; times acceptance, and samples GET /batches/{id} while
 * the server's own agents end children through the agent protocol: first as fast as the protocol
 * allows (the stand-in model fails at once), then with each packed unit of 64 taking `--model-seconds`,
 * then `--fleet-model-seconds`.
 */
async function bigBatch(dialect: "sqlite" | "postgres") {
  let schema: string | undefined;
  let admin: pg.Client | undefined;
  if (dialect === "postgres") {
    schema = `bench_screen_${Date.now()}`;
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`create schema ${schema}`);
  }
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-screen-"));
  const bin = await standInBoltz(dir);
  const { url, child } = await spawnHangarServer(REPO_ROOT, dir, API_KEY, {
    // The server's agents inherit PATH, so they find the stand-in first.
    PATH: `${bin}:${process.env.PATH ?? ""}`,
    // The bench reads as fast as it can for minutes: the per-key request limit would refuse it.
    HANGAR_RATE_LIMIT_PER_MINUTE: "0",
    HANGAR_ORG_RATE_LIMIT_PER_MINUTE: "0",
    ...(dialect === "postgres" ? { DATABASE_URL: PG_URL, HANGAR_DATABASE_SCHEMA: schema! } : {}),
  });
  try {
    const client = new HangarClient(url, API_KEY);
    const ligands = ligandSmiles(BIG);
    const file = join(dir, "ligands.csv");
    await writeFile(file, `name,smiles\n${ligands.map((l) => `${l.name},${l.smiles}`).join("\n")}\n`);
    const dataset = await client.uploadDataset([{ path: file, name: "ligands.csv" }]);
    progress(`${dialect}: submitting ${BIG} distinct ligands`);
    const started = performance.now();
    const batch = await client.request<BatchView>("POST", "/api/v1/predict/batch", {
      model: "boltz2",
      protein_sequence: SEQUENCE,
      ligands_dataset: dataset.id,
      max_concurrent: 100_000,
      // A generated library has some chemically impossible rows; they become failed children.
      skip_invalid: true,
    });
    const acceptedS = secondsSince(started);
    progress(`${dialect}: accepted in ${acceptedS} s as ${batch.status}`);
    // The background check: the batch leaves `validating` when every ligand has been checked.
    const checkLatencies: number[] = [];
    let checked = batch;
    while (checked.status === "validating") {
      const t = performance.now();
      checked = await client.request<BatchView>("GET", `/api/v1/batches/${batch.id}`);
      checkLatencies.push(performance.now() - t);
      await sleep(20);
    }
    const checkedS = secondsSince(started);
    checkLatencies.sort((a, b) => a - b);
    const rssAfterSubmit = await peakRssMiB(child.pid!);
    progress(
      `${dialect}: checked (${checked.status}) after ${checkedS} s (server peak RSS ${rssAfterSubmit} MiB)`,
    );
    // Saturated: the stand-in model ends at once, so children end as fast as the protocol allows.
    const saturated = await readWhileEnding(client, batch.id, 0);
    // Paced: each packed unit of 64 takes MODEL_SECONDS, a rate far above any real fleet's.
    await writeFile(join(dir, "boltz-seconds"), String(MODEL_SECONDS));
    const paced = await readWhileEnding(client, batch.id, MODEL_SECONDS);
    // Fleet: units of 64 taking FLEET_MODEL_SECONDS end children at the pace of hundreds of GPUs running Boltz-2.
    await writeFile(join(dir, "boltz-seconds"), String(FLEET_MODEL_SECONDS));
    const fleet = await readWhileEnding(client, batch.id, FLEET_MODEL_SECONDS);
    await client.request("POST", `/api/v1/batches/${batch.id}/cancel`).catch(() => undefined);
    return {
      ligands: BIG,
      invalid_rows: batch.progress.failed,
      accepted_s: acceptedS,
      target_accepted_s: 10,
      checked_and_queued_s: checkedS,
      get_batch_while_checking_ms: {
        samples: checkLatencies.length,
        p50: round(percentile(checkLatencies, 50), 2),
        p99: round(percentile(checkLatencies, 99), 2),
      },
      server_peak_rss_mib: await peakRssMiB(child.pid!),
      server_peak_rss_after_submit_mib: rssAfterSubmit,
      target_peak_rss_mib: 400,
      get_batch_while_completing_ms: { saturated, paced, fleet, target_ms: 5 },
    };
  } finally {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    await killAgents(dir);
    await rm(dir, { recursive: true, force: true });
    if (admin && schema) {
      await admin.query(`drop schema ${schema} cascade`);
      await admin.end();
    }
  }
}

/**
 * A bench-only stand-in for `boltz` (Boltz-2 cannot run here): it waits the seconds written in
 * `<dir>/boltz-seconds` and fails, so each packed unit's children end after a chosen model time.
 */
async function standInBoltz(dir: string): Promise<string> {
  const bin = join(dir, "bin");
  await mkdir(bin);
  await writeFile(join(dir, "boltz-seconds"), "0");
  await writeFile(
    join(bin, "boltz"),
    `#!/bin/sh\nsleep "$(cat '${dir}/boltz-seconds')"\necho "bench stand-in: no Boltz-2 model here" >&2\nexit 1\n`,
    { mode: 0o755 },
  );
  return bin;
}

/** The server's own `GET /batches/{id}` latency histogram (hangar_http_request_duration_seconds): bucket bound → count. */
async function serverBatchReadBuckets(client: HangarClient): Promise<Map<number, number>> {
  const text = await (await fetch(`${client.baseUrl}/metrics`)).text();
  const buckets = new Map<number, number>();
  const line =
    /^hangar_http_request_duration_seconds_bucket\{le="([^"]+)",method="GET",route="\/api\/v1\/batches\/:id"\} (\d+)$/;
  for (const match of text.split("\n").map((l) => line.exec(l))) {
    if (match)
      buckets.set(match[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(match[1]), Number(match[2]));
  }
  return buckets;
}

/**
 * What the server measured between two scrapes: the share of reads it answered within 5 ms, and
 * the upper bound of the bucket holding its p99 (the histogram's resolution).
 */
function serverSide(before: Map<number, number>, after: Map<number, number>) {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const count = (le: number) => (after.get(le) ?? 0) - (before.get(le) ?? 0);
  const total = count(Number.POSITIVE_INFINITY);
  const p99Bound = bounds.find((le) => count(le) >= total * 0.99) ?? Number.POSITIVE_INFINITY;
  return {
    samples: total,
    within_5ms_share: total > 0 ? round(count(0.005) / total, 4) : null,
    p99_at_most_ms: Number.isFinite(p99Bound) ? p99Bound * 1000 : null,
  };
}

/**
 * Samples GET /batches/{id} for READ_WINDOW_MS while the server's agents end its children. The
 * latency is measured at the client (the round trip, the bench's own scheduling included) and by
 * the server (its request-duration histogram: from the request's arrival in Fastify to the answer).
 * The reference, in the same loop: GET /healthz, a route that reads nothing, so its round trip is
 * this machine's floor for any request to the same server at the same moment.
 */
async function readWhileEnding(client: HangarClient, batchId: string, modelSeconds: number) {
  const latencies: number[] = [];
  const floor: number[] = [];
  const bucketsBefore = await serverBatchReadBuckets(client);
  const started = performance.now();
  const ended = (view: BatchView) => view.progress.completed + view.progress.failed;
  let view = await client.request<BatchView>("GET", `/api/v1/batches/${batchId}`);
  const first = ended(view);
  while (performance.now() - started < READ_WINDOW_MS && view.progress.pending + view.progress.running > 0) {
    const t = performance.now();
    view = await client.request<BatchView>("GET", `/api/v1/batches/${batchId}`);
    latencies.push(performance.now() - t);
    await sleep(10);
    const h = performance.now();
    await (await fetch(`${client.baseUrl}/healthz`)).arrayBuffer();
    floor.push(performance.now() - h);
    await sleep(10);
  }
  const seconds = (performance.now() - started) / 1000;
  const server = serverSide(bucketsBefore, await serverBatchReadBuckets(client));
  latencies.sort((a, b) => a - b);
  floor.sort((a, b) => a - b);
  progress(
    `read while ending (model ${modelSeconds} s): p99 ${round(percentile(latencies, 99), 2)} ms (healthz ${round(percentile(floor, 99), 2)} ms); server: ${server.within_5ms_share} within 5 ms`,
  );
  return {
    model_seconds_per_unit: modelSeconds,
    samples: latencies.length,
    p50: round(percentile(latencies, 50), 2),
    p99: round(percentile(latencies, 99), 2),
    max: round(latencies.at(-1) ?? 0, 2),
    healthz_reference: {
      p50: round(percentile(floor, 50), 2),
      p99: round(percentile(floor, 99), 2),
      max: round(floor.at(-1) ?? 0, 2),
    },
    server,
    children_ended: ended(view) - first,
    children_ended_per_s: round((ended(view) - first) / seconds, 0),
    boltz2_gpus_at_this_pace: round(((ended(view) - first) / seconds) * BOLTZ2_SECONDS_PER_LIGAND, 0),
  };
}

/** Agents outlive their server by design; the bench ends the ones its servers started. */
async function killAgents(dataDir: string): Promise<void> {
  for (const pid of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.includes(`HANGAR_WORK_DIR=${dataDir}`)) {
      try {
        process.kill(-Number(pid), "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
}

/**
 * The same prepared inputs docked by vina directly, one single-threaded process per core, as a shell
 * loop would: Hangar's receptor preparation, and the very 3D ligands Hangar docked (each child keeps
 * its input as a `ligand` structure), so both sides run the same searches with the same seed.
 */
async function vinaDirect(
  ligandFiles: string[],
  box: { center: number[]; size: number[] },
  dir: string,
): Promise<{ wall_s: number; ligands_per_hour: number }> {
  const clean = join(dir, "receptor.pdb");
  await writeFile(clean, cleanReceptorPdb(await readFile(RECEPTOR, "utf8")).text);
  await run("obabel", [clean, "-xr", "-h", "-O", join(dir, "receptor.pdbqt")]);
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < ligandFiles.length; i = next++) {
      await run("vina", [
        "--receptor",
        join(dir, "receptor.pdbqt"),
        "--ligand",
        ligandFiles[i]!,
        ...["x", "y", "z"].flatMap((axis, i) => [`--center_${axis}`, String(box.center[i])]),
        ...["x", "y", "z"].flatMap((axis, i) => [`--size_${axis}`, String(box.size[i])]),
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
  return { wall_s: round(wall, 1), ligands_per_hour: round((ligandFiles.length / wall) * 3600, 0) };
}

/** Downloads the 3D ligand each child docked, in submission order. */
async function dockedInputs(client: HangarClient, batchId: string, dir: string): Promise<string[]> {
  const page = await client.request<{ children: { id: string }[] }>(
    "GET",
    `/api/v1/batches/${batchId}/children?limit=1000`,
  );
  const files: string[] = [];
  for (const [i, child] of page.children.entries()) {
    const download = await client.request<{ files: { path: string; url: string }[] }>(
      "GET",
      `/api/v1/jobs/${child.id}/download`,
    );
    const ligand = download.files.find((f) => f.path.endsWith(".ligand.pdbqt"));
    if (!ligand) throw new Error(`child ${child.id} kept no prepared ligand`);
    const file = join(dir, `l${i}.pdbqt`);
    await writeFile(file, Buffer.from(await (await fetch(ligand.url)).arrayBuffer()));
    files.push(file);
  }
  return files;
}

async function vinaThroughHangar(ligands: { name: string; smiles: string }[], inputsDir: string) {
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
      ligandFiles: await dockedInputs(client, submitted.id, inputsDir),
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
  const PER_LIGAND_S = BOLTZ2_SECONDS_PER_LIGAND;
  const LIGANDS = 100;
  const simulate = async (perClaim: number) => {
    const dir = await mkdtemp(join(tmpdir(), "hangar-bench-pack-"));
    const store = openStore({ databaseUrl: undefined, schema: undefined, dataDir: dir });
    try {
      await store.migrate();
      await store.accounts.ensureOrg("org_bench", "bench", 0);
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

// The bundles as `./scripts/setup.sh` leaves them: agents run dist/agent.mjs, `./hangar` dist/hangar.mjs.
await run(process.execPath, [join(REPO_ROOT, "scripts/build.ts")]);
const result: Record<string, unknown> = { benchmark: "screen", machine: machine() };
result.packing = await packing();
progress(`packing: ${JSON.stringify(result.packing)}`);
if (!args["skip-sqlite"]) result.submit_sqlite = await bigBatch("sqlite");
if (!args["skip-postgres"]) result.submit_postgres = await bigBatch("postgres");
if (!args["skip-vina"]) {
  const vinaLigands = VINA_SET.slice(0, VINA_LIGANDS);
  progress(`vina: ${VINA_LIGANDS} ligands through Hangar (exhaustiveness ${EXHAUSTIVENESS})`);
  const inputsDir = await mkdtemp(join(tmpdir(), "hangar-bench-vina-"));
  const hangar = await vinaThroughHangar(vinaLigands, inputsDir);
  progress(`vina: Hangar ${JSON.stringify(hangar.result)}; the same inputs directly`);
  const direct = await vinaDirect(hangar.ligandFiles, hangar.box, inputsDir);
  await rm(inputsDir, { recursive: true, force: true });
  result.vina = {
    ligands: VINA_LIGANDS,
    exhaustiveness: EXHAUSTIVENESS,
    processes_side_by_side: availableParallelism(),
    hangar: hangar.result,
    direct,
    ratio_hangar_over_direct: round(hangar.result.ligands_per_hour / direct.ligands_per_hour, 2),
    target_ratio: 0.9,
    note: "Both dock the same prepared 3D ligands with the same seed; Hangar's time also includes submit, receptor and ligand preparation and uploads, the direct loop's excludes preparation",
  };
}
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(0);
