import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { unzipSync } from "fflate";
import type { BatchView, PredictionView } from "../../src/cli/predictions.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";

const exec = promisify(execFile);

const RECEPTOR = "/usr/share/pymol/data/tut/1hpv.pdb";
const haveTools = existsSync(RECEPTOR) && existsSync("/usr/bin/vina") && existsSync("/usr/bin/obabel");
const QUICK = { box_ligand: "478", exhaustiveness: 1, num_modes: 3 };

describe("predictions and batch screens (SQLite, local provider, real Vina)", {
  concurrency: 1,
  skip: haveTools ? false : "vina, obabel or pymol-data missing",
}, () => {
  let server: ServerProcess;
  let dir: string;
  let receptorId: string;

  before(async () => {
    // Batches of more than three ligands take the background check that big batches take.
    server = await spawnServer({ HANGAR_LOCAL_MAX_INSTANCES: "1", HANGAR_BATCH_SYNC_CHECK_LIMIT: "3" });
    dir = await mkdtemp(join(tmpdir(), "hangar-predict-"));
    receptorId = (await server.client.uploadDataset([{ path: RECEPTOR, name: "1hpv.pdb" }])).id;
  });
  after(async () => {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  });

  it("rejects bad chemistry and bad targets with 422 and stores no batch", async () => {
    const before = await server.client.request<{ batches: unknown[] }>("GET", "/api/v1/batches");
    const bad = await server.client
      .request("POST", "/api/v1/predict/batch", {
        model: "vina",
        receptor: receptorId,
        parameters: QUICK,
        ligands: [
          { name: "aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" },
          { name: "broken", smiles: "C1CC(" },
          { name: "nonsense", smiles: "Xx" },
        ],
      })
      .catch(
        (error: { status: number; code: string; details: { invalid: { index: number; name: string }[] } }) =>
          error,
      );
    assert.equal((bad as { status: number }).status, 422);
    assert.equal((bad as { code: string }).code, "invalid_ligands");
    assert.deepEqual(
      (bad as { details: { invalid: { index: number; name: string }[] } }).details.invalid.map((r) => [
        r.index,
        r.name,
      ]),
      [
        [1, "broken"],
        [2, "nonsense"],
      ],
    );
    const missingBox = await server.client
      .request("POST", "/api/v1/predict/batch", {
        model: "vina",
        receptor: receptorId,
        parameters: { box_ligand: "ZZZ" },
        ligands: [{ smiles: "CCO" }],
      })
      .catch((error: { status: number; code: string; message: string }) => error);
    assert.equal((missingBox as { code: string }).code, "box_ligand_not_found");
    assert.match((missingBox as { message: string }).message, /478/);
    const unknown = await server.client
      .request("POST", "/api/v1/predict", { model: "dock9000", receptor: receptorId, ligand_smiles: "CCO" })
      .catch((error: { status: number; code: string }) => error);
    assert.equal((unknown as { code: string }).code, "unknown_model");
    const after = await server.client.request<{ batches: unknown[] }>("GET", "/api/v1/batches");
    assert.equal(after.batches.length, before.batches.length);
  });

  it("accepts a big batch at once and rejects it after the background check, listing the bad rows", async () => {
    const accepted = await server.client.request<BatchView>("POST", "/api/v1/predict/batch", {
      model: "vina",
      receptor: receptorId,
      parameters: QUICK,
      ligands: [
        { name: "a", smiles: "CCO" },
        { name: "b", smiles: "C1CC(" },
        { name: "c", smiles: "CCN" },
        { name: "d", smiles: "CCC" },
      ],
    });
    assert.equal(accepted.status, "validating");
    const rejected = await waitFor("the check to reject it", async () => {
      const view = await server.client.request<
        BatchView & { error: { code: string; invalid: { index: number }[] } | null }
      >("GET", `/api/v1/batches/${accepted.id}`);
      return view.status === "rejected" ? view : null;
    });
    assert.equal(rejected.error?.code, "invalid_ligands");
    assert.deepEqual(
      rejected.error?.invalid.map((row) => row.index),
      [1],
    );
    const children = await server.client.request<{ children: unknown[] }>(
      "GET",
      `/api/v1/batches/${accepted.id}/children`,
    );
    assert.equal(children.children.length, 0, "a rejected batch keeps no children");
  });

  it("screens ligands with Vina: live counters, ranked results, CSV, histogram and top poses", async () => {
    const submitted = await server.client.request<BatchView & { skipped_invalid: number }>(
      "POST",
      "/api/v1/predict/batch",
      {
        model: "vina",
        batch_name: "aspirin derivatives",
        receptor: receptorId,
        parameters: QUICK,
        skip_invalid: true,
        max_concurrent: 2,
        ligands: [
          { name: "aspirin", smiles: "CC(=O)Oc1ccccc1C(=O)O" },
          { name: "salicylic acid", smiles: "O=C(O)c1ccccc1O" },
          { name: "aspirin sodium", smiles: "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]" },
          { name: "broken", smiles: "C1CC(" },
        ],
      },
    );
    assert.equal(submitted.progress.total, 4);
    assert.equal(submitted.status, "validating", "four ligands are over this server's check-at-submit limit");
    const batch = await waitFor(
      "the screen to end",
      async () => {
        const view = await server.client.request<BatchView>("GET", `/api/v1/batches/${submitted.id}`);
        return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
      },
      240_000,
    );
    assert.equal(batch.status, "succeeded", JSON.stringify(batch));
    assert.equal((batch as BatchView & { skipped_invalid: number }).skipped_invalid, 1);
    assert.deepEqual(batch.progress, {
      total: 4,
      pending: 0,
      running: 0,
      completed: 3,
      failed: 1,
      cancelled: 0,
    });
    assert.ok(
      batch.score.best !== null && batch.score.best < 0 && batch.score.best > -15,
      `best ${batch.score.best}`,
    );

    const results = await server.client.request<{
      results: {
        rank: number | null;
        name: string;
        score: number | null;
        status: string;
        error: string | null;
      }[];
    }>("GET", `/api/v1/batches/${batch.id}/results`);
    const ranked = results.results.filter((r) => r.rank !== null);
    assert.deepEqual(
      ranked.map((r) => r.rank),
      [1, 2, 3],
    );
    for (let i = 1; i < ranked.length; i++)
      assert.ok(ranked[i - 1]!.score! <= ranked[i]!.score!, "best (lowest) first");
    assert.equal(ranked[0]!.score, batch.score.best);
    const broken = results.results.find((r) => r.name === "broken");
    assert.equal(broken?.status, "failed");
    assert.match(broken?.error ?? "", /invalid_ligand/);
    const salt = await server.client.request<{ children: PredictionView[] }>(
      "GET",
      `/api/v1/batches/${batch.id}/children?limit=10`,
    );
    const sodium = salt.children.find((c) => c.ligand.name === "aspirin sodium");
    assert.equal(
      sodium?.ligand.fragments_dropped,
      1,
      "the salt's counter-ion was dropped, and the result says so",
    );

    // A child's run log is written on its first download: the lines shipped with its finish are in it.
    const aspirin = salt.children.find((c) => c.ligand.name === "aspirin")!;
    const childFiles = await server.client.request<{ files: { path: string; url: string }[] }>(
      "GET",
      `/api/v1/jobs/${aspirin.id}/download`,
    );
    const logLink = childFiles.files.find((f) => f.path === "logs.txt");
    assert.ok(logLink, childFiles.files.map((f) => f.path).join(", "));
    const childLog = await (await fetch(logLink.url)).text();
    assert.match(childLog, /\$ \S*vina --receptor/);
    assert.match(childLog, /finished: succeeded/);

    const csv = await server.client.request<string>("GET", `/api/v1/batches/${batch.id}/results?format=csv`);
    assert.match(csv.split("\n")[0]!, /^rank,name,smiles,status,score,unit/);
    assert.equal(csv.trim().split("\n").length, 5);

    const download = await waitFor("the final artifacts", async () => {
      const links = await server.client.request<{
        final: boolean;
        artifacts: { path: string; url: string }[];
      }>("GET", `/api/v1/batches/${batch.id}/download`);
      return links.final ? links : null;
    });
    assert.deepEqual(download.artifacts.map((a) => a.path).sort(), [
      "affinity_distribution.png",
      "batch_results.csv",
      "summary.json",
      "top_10_structures.zip",
    ]);
    const fetchBytes = async (path: string) =>
      new Uint8Array(await (await fetch(download.artifacts.find((a) => a.path === path)!.url)).arrayBuffer());
    const png = await fetchBytes("affinity_distribution.png");
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], "a real PNG");
    assert.ok(png.length > 5_000, "a drawn histogram, not an empty image");
    const zip = unzipSync(await fetchBytes("top_10_structures.zip"));
    const names = Object.keys(zip).sort();
    assert.equal(names.filter((n) => n.endsWith(".sdf")).length, 3, names.join(", "));
    assert.ok(names.some((n) => n.startsWith("receptor_")));
    const summary = JSON.parse(new TextDecoder().decode(await fetchBytes("summary.json"))) as {
      counts: { completed: number };
      score: { best: number; median: number };
    };
    assert.equal(summary.counts.completed, 3);
    assert.equal(summary.score.best, batch.score.best);
  });

  it("screens from the CLI with --wait --json, then ranks and downloads the results", async () => {
    const ligands = join(dir, "two.smi");
    await writeFile(
      ligands,
      "# name after the SMILES\nCC(=O)Oc1ccccc1C(=O)O aspirin\nO=C(O)c1ccccc1O salicylic\n",
    );
    const env = { ...process.env, HANGAR_URL: server.url, HANGAR_API_KEY: TEST_API_KEY };
    const hangar = (args: string[]) => exec(join(REPO_ROOT, "hangar"), args, { env });
    const screened = await hangar([
      "screen",
      "--model",
      "vina",
      "--receptor",
      RECEPTOR,
      "--ligands",
      ligands,
      "-p",
      "box_ligand=478",
      "-p",
      "exhaustiveness=1",
      "--wait",
      "--json",
    ]);
    const batch = JSON.parse(screened.stdout) as BatchView;
    assert.equal(batch.status, "succeeded");
    assert.equal(batch.progress.completed, 2);
    const csv = await hangar(["results", batch.id, "--top", "1", "--format", "csv"]);
    assert.equal(csv.stdout.trim().split("\n").length, 2, "a header and the best row");
    const out = join(dir, "cli-download");
    await waitFor("final artifacts", async () => {
      const links = await server.client.request<{ final: boolean }>(
        "GET",
        `/api/v1/batches/${batch.id}/download`,
      );
      return links.final;
    });
    const saved = await hangar(["download", batch.id, "--out", out]);
    assert.equal(saved.stdout.trim().split("\n").length, 4);
    assert.ok(existsSync(join(out, "affinity_distribution.png")));
  });

  it("runs a single prediction, and fails one whose model is not installed, naming how to provide it", async () => {
    const job = await server.client.request<PredictionView>("POST", "/api/v1/predict", {
      model: "vina",
      receptor: receptorId,
      ligand_smiles: "CC(=O)Nc1ccc(O)cc1",
      ligand_name: "paracetamol",
      parameters: QUICK,
    });
    const done = await waitFor(
      "the prediction",
      async () => {
        const view = await server.client.request<PredictionView>("GET", `/api/v1/jobs/${job.id}`);
        return ["succeeded", "failed"].includes(view.status) ? view : null;
      },
      120_000,
    );
    assert.equal(done.status, "succeeded", JSON.stringify(done));
    assert.equal(done.result?.unit, "kcal/mol");
    assert.ok((done.result?.score ?? 0) < 0);

    const boltz = await server.client.request<PredictionView>("POST", "/api/v1/predict", {
      model: "boltz2",
      protein_sequence:
        "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF",
      ligand_smiles: "CC(=O)Oc1ccccc1C(=O)O",
    });
    const failed = await waitFor("the Boltz-2 job to fail", async () => {
      const view = await server.client.request<PredictionView>("GET", `/api/v1/jobs/${boltz.id}`);
      return view.status === "failed" ? view : null;
    });
    assert.equal(failed.error?.code, "model_not_installed");
    assert.match(failed.error?.message ?? "", /HANGAR_BOLTZ_CMD/);
  });

  it("takes a precomputed MSA whose query is the protein, and refuses one it cannot use", async () => {
    const protease =
      "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";
    const upload = async (name: string, text: string) => {
      await writeFile(join(dir, name), text);
      return (await server.client.uploadDataset([{ path: join(dir, name), name }])).id;
    };
    const good = await upload(
      "protease.a3m",
      `>query\n${protease}\n>hit\n${protease.replace("PQIT", "PQlIT")}\n`,
    );
    const wrong = await upload("other.a3m", ">query\nMQIFVKTLTGK\n");
    const body = { model: "boltz2", protein_sequence: protease, ligand_smiles: "CCO" };
    const refusal = (extra: object) =>
      server.client.request("POST", "/api/v1/predict", { ...body, ...extra }).then(
        () => assert.fail("accepted"),
        (error: { status: number; code: string; message: string }) => error,
      );
    const mismatch = await refusal({ msa: wrong });
    assert.equal(mismatch.status, 422);
    assert.equal(mismatch.code, "invalid_msa");
    assert.match(mismatch.message, /query, 11 residues\) is not protein_sequence \(99 residues\)/);
    assert.equal((await refusal({ msa: receptorId })).code, "invalid_msa", "a PDB is not an MSA");
    assert.equal(
      (await refusal({ msa: good, parameters: { msa_server_url: "https://api.colabfold.com" } })).code,
      "msa_conflict",
    );
    assert.equal(
      (await refusal({ model: "vina", receptor: receptorId, msa: good, parameters: QUICK })).code,
      "msa_not_supported",
    );
    const accepted = await server.client.request<PredictionView>("POST", "/api/v1/predict", {
      ...body,
      msa: good,
    });
    assert.equal(accepted.status, "queued");
  });
});
