/**
 * Fair share between orgs: how long a second org's work waits while a first org's big batch keeps
 * every agent busy, with fair share on and off (HANGAR_FAIR_SHARE), side by side in one run on the
 * same server build. Prints one JSON object on stdout; progress goes to stderr.
 *
 * The model is a bench-only stand-in for `boltz` (Boltz-2 cannot run here): each packed unit of 64
 * children takes `--model-seconds` and fails, so only scheduling is measured.
 *
 *   node bench/fairshare.ts [--ligands 3000] [--model-seconds 0.4] [--repeats 3]
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { HangarClient } from "../src/cli/client.ts";
import { loadConfig } from "../src/config.ts";
import { startServer } from "../src/server/server.ts";
import { machine, progress, round, spread } from "./lib.ts";

const { values: args } = parseArgs({
  options: {
    ligands: { type: "string", default: "3000" },
    "model-seconds": { type: "string", default: "0.4" },
    repeats: { type: "string", default: "3" },
  },
});
const LIGANDS = Number(args.ligands);
const MODEL_SECONDS = Number(args["model-seconds"]);
const REPEATS = Number(args.repeats);
const SMALL_BATCH = 64;
const WAIT_CAP_MS = 300_000;
const API_KEY = "hgr_bench_fairshare_0123456789";
const SEQUENCE =
  "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";

/** Distinct valid SMILES: alkyl chains with a varying tail, so nothing is checked twice. */
const ligands = (count: number, tag: string) =>
  Array.from({ length: count }, (_, i) => ({
    name: `${tag}${i}`,
    smiles: `${"C".repeat(1 + (i % 12))}O${"C".repeat(1 + (Math.floor(i / 12) % 12))}N${"C".repeat(1 + Math.floor(i / 144))}`,
  }));

interface Timings {
  single_wait_s: number;
  batch_first_start_s: number;
  batch_done_s: number;
  big_batch_done_s: number;
}

async function oneRun(fairShare: boolean): Promise<Timings> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-bench-fair-"));
  const config = loadConfig(
    {
      ...process.env,
      HANGAR_LOG_LEVEL: process.env.HANGAR_BENCH_LOG_LEVEL ?? "silent",
      HANGAR_RATE_LIMIT_PER_MINUTE: "0",
    },
    { dataDir: dir, port: 0, bootstrapApiKey: API_KEY, fairShare, orgRateLimitPerMinute: 0 },
  );
  const server = await startServer(config);
  try {
    const admin = new HangarClient(server.url, API_KEY);
    const org = await admin.request<{ id: string }>("POST", "/api/v1/orgs", { name: "second lab" });
    const key = await admin.request<{ key: string }>("POST", `/api/v1/orgs/${org.id}/api-keys`, {
      name: "bench",
      scopes: ["read", "write"],
    });
    const second = new HangarClient(server.url, key.key);
    const big = await admin.request<{ id: string }>("POST", "/api/v1/predict/batch", {
      model: "boltz2",
      batch_name: "first lab's big screen",
      protein_sequence: SEQUENCE,
      ligands: ligands(LIGANDS, "a"),
      skip_invalid: true,
      // As many children at once as every agent can take: the first lab could fill the whole host.
      max_concurrent: LIGANDS,
    });
    const bigStart = performance.now();
    await waitUntil(async () => {
      const batch = await admin.request<{ progress: { running: number } }>(
        "GET",
        `/api/v1/batches/${big.id}`,
      );
      return batch.progress.running > 0;
    });
    progress(`fair share ${fairShare ? "on" : "off"}: the first lab's batch runs; the second lab submits`);
    const submitted = performance.now();
    const single = await second.request<{ id: string }>("POST", "/api/v1/predict", {
      model: "boltz2",
      protein_sequence: SEQUENCE,
      ligand_smiles: "CCO",
      ligand_name: "ethanol",
    });
    const small = await second.request<{ id: string }>("POST", "/api/v1/predict/batch", {
      model: "boltz2",
      batch_name: "second lab's small screen",
      protein_sequence: SEQUENCE,
      ligands: ligands(SMALL_BATCH, "b"),
    });
    const seconds = (since: number) => round((performance.now() - since) / 1000, 2);
    let singleWait: number | undefined;
    let firstStart: number | undefined;
    let smallDone: number | undefined;
    let bigDone: number | undefined;
    await waitUntil(async () => {
      if (singleWait === undefined) {
        const job = await second.request<{ status: string }>("GET", `/api/v1/jobs/${single.id}`);
        if (job.status !== "queued") singleWait = seconds(submitted);
      }
      if (smallDone === undefined) {
        const batch = await second.request<{ status: string; progress: { pending: number; total: number } }>(
          "GET",
          `/api/v1/batches/${small.id}`,
        );
        if (firstStart === undefined && batch.progress.pending < batch.progress.total)
          firstStart = seconds(submitted);
        if (["succeeded", "failed", "cancelled"].includes(batch.status)) smallDone = seconds(submitted);
      }
      if (bigDone === undefined) {
        const batch = await admin.request<{ status: string }>("GET", `/api/v1/batches/${big.id}`);
        if (["succeeded", "failed", "cancelled"].includes(batch.status)) bigDone = seconds(bigStart);
      }
      return singleWait !== undefined && smallDone !== undefined && bigDone !== undefined;
    });
    return {
      single_wait_s: singleWait!,
      batch_first_start_s: firstStart!,
      batch_done_s: smallDone!,
      big_batch_done_s: bigDone!,
    };
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function waitUntil(probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_CAP_MS;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error("the bench waited over 5 minutes");
    await sleep(50);
  }
}

const root = await mkdtemp(join(tmpdir(), "hangar-bench-fair-bin-"));
const bin = join(root, "bin");
await mkdir(bin);
await writeFile(
  join(bin, "boltz"),
  `#!/bin/sh\nsleep ${MODEL_SECONDS}\necho "bench stand-in: no Boltz-2 model here" >&2\nexit 1\n`,
  {
    mode: 0o755,
  },
);
// The server's agents inherit PATH, so they find the stand-in first.
process.env.PATH = `${bin}:${process.env.PATH}`;
const on: Timings[] = [];
const off: Timings[] = [];
for (let i = 0; i < REPEATS; i++) {
  // Alternating keeps slow drift of the machine from favouring one side.
  off.push(await oneRun(false));
  on.push(await oneRun(true));
  progress(`repeat ${i + 1}/${REPEATS}: off ${JSON.stringify(off.at(-1))} on ${JSON.stringify(on.at(-1))}`);
}
await rm(root, { recursive: true, force: true });
const summary = (runs: Timings[]) => ({
  single_wait_s: spread(
    runs.map((r) => r.single_wait_s),
    2,
  ),
  small_batch_first_start_s: spread(
    runs.map((r) => r.batch_first_start_s),
    2,
  ),
  small_batch_done_s: spread(
    runs.map((r) => r.batch_done_s),
    2,
  ),
  big_batch_done_s: spread(
    runs.map((r) => r.big_batch_done_s),
    2,
  ),
});
const withFair = summary(on);
const without = summary(off);
console.log(
  JSON.stringify(
    {
      benchmark: "fair share between orgs",
      machine: machine(),
      setup: {
        first_org_batch_ligands: LIGANDS,
        second_org: `one prediction and a ${SMALL_BATCH}-ligand batch, submitted once the big batch runs`,
        model_seconds_per_unit_of_64: MODEL_SECONDS,
        repeats: REPEATS,
        store: "sqlite",
      },
      fair_share_off: without,
      fair_share_on: withFair,
      ratios_off_over_on: {
        single_wait: round(without.single_wait_s.median / Math.max(withFair.single_wait_s.median, 0.01), 1),
        small_batch_done: round(
          without.small_batch_done_s.median / Math.max(withFair.small_batch_done_s.median, 0.01),
          1,
        ),
        big_batch_done: round(
          without.big_batch_done_s.median / Math.max(withFair.big_batch_done_s.median, 0.01),
          2,
        ),
      },
    },
    null,
    2,
  ),
);
