import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { OfferView } from "../../src/cli/offers.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { type RunPodEmulator, startRunPodEmulator } from "../emulators/runpod.ts";
import { startTensorDockEmulator, type TensorDockEmulator } from "../emulators/tensordock.ts";
import { startVastEmulator, type VastEmulator } from "../emulators/vastai.ts";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";

const exec = promisify(execFile);

describe("offers from every configured provider (RunPod, Vast.ai and TensorDock emulated)", () => {
  let runpod: RunPodEmulator;
  let vast: VastEmulator;
  let tensordock: TensorDockEmulator;
  let server: ServerProcess;
  const cli = (args: string[]) =>
    exec(join(REPO_ROOT, "hangar"), args, {
      env: { ...process.env, HANGAR_URL: server.url, HANGAR_API_KEY: TEST_API_KEY },
    }).then(
      (done) => ({ code: 0, ...done }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );

  before(async () => {
    runpod = await startRunPodEmulator("rp_secret_0123456789");
    vast = await startVastEmulator("vast_secret_0123456789");
    tensordock = await startTensorDockEmulator("td_secret_0123456789");
    server = await spawnServer({
      RUNPOD_API_KEY: runpod.apiKey,
      RUNPOD_GRAPHQL_URL: runpod.url,
      VAST_API_KEY: vast.apiKey,
      VAST_API_URL: vast.url,
      TENSORDOCK_API_TOKEN: tensordock.token,
      TENSORDOCK_API_URL: tensordock.url,
      HANGAR_OFFERS_CACHE_S: "0",
      // Snapshots would ask the providers too and take the faults other tests inject.
      HANGAR_MARKET_SNAPSHOT_S: "0",
    });
  });
  after(async () => {
    await stopServer(server);
    await runpod.close();
    await vast.close();
    await tensordock.close();
  });

  it("lists live offers of this machine, RunPod, Vast.ai and TensorDock, cheapest first, each with its age", async () => {
    const { stdout } = await cli(["offers", "--json"]);
    const offers = JSON.parse(stdout) as OfferView[];
    assert.deepEqual([...new Set(offers.map((o) => o.provider))].sort(), [
      "local",
      "runpod",
      "tensordock",
      "vastai",
    ]);
    const prices = offers.map((o) => o.price_per_hour);
    assert.deepEqual(
      prices,
      [...prices].sort((a, b) => a - b),
    );
    for (const o of offers) assert.ok(o.age_s >= 0 && o.age_s < 60, `age ${o.age_s}`);
    assert.ok(
      !stdout.includes(runpod.apiKey) && !stdout.includes(vast.apiKey),
      "no credential in the answer",
    );
  });

  it("filters by GPU in any spelling, kind and price, across providers", async () => {
    const { stdout } = await cli([
      "offers",
      "--gpu",
      "NVIDIA GeForce RTX 4090",
      "--spot",
      "--max-price",
      "0.4",
      "--json",
    ]);
    const offers = JSON.parse(stdout) as OfferView[];
    assert.deepEqual(
      offers.map((o) => [o.provider, o.gpu, o.gpu_count, o.spot, o.price_per_hour]),
      [
        ["vastai", "RTX4090", 1, true, 0.18],
        ["runpod", "RTX4090", 1, true, 0.2],
        ["vastai", "RTX4090", 2, true, 0.33],
      ],
    );
    const table = await cli(["offers", "--gpu", "RTX4090", "--provider", "runpod"]);
    assert.match(table.stdout, /^PROVIDER\s+GPU/m);
    assert.match(table.stdout, /runpod\s+RTX4090\s+1\s+24 GB.*on-demand\s+\$0\.340\/h/);
  });

  it("reports a provider that fails beside the others' offers, and refuses an unknown provider", async () => {
    // Two searches (on-demand and bid) of four attempts each.
    vast.faults.push(...Array.from({ length: 8 }, () => ({ kind: "status" as const, status: 500 })));
    const degraded = await cli(["offers", "--json"]);
    const offers = JSON.parse(degraded.stdout) as OfferView[];
    assert.ok(offers.some((o) => o.provider === "runpod"));
    assert.ok(!offers.some((o) => o.provider === "vastai"));
    assert.match(degraded.stderr, /warning: vastai: vastai: HTTP 500 after 4 attempts/);

    const unknown = await cli(["offers", "--provider", "gcp"]);
    assert.equal(unknown.code, 2, "a refused request exits 2");
    assert.match(
      unknown.stderr,
      /"gcp" is not configured here; configured: local, runpod, vastai, tensordock \(unknown_provider, HTTP 400\)/,
    );
  });

  it("summarises the market per GPU type: min, median and p90 per GPU-hour", async () => {
    const { stdout } = await cli(["market", "--json"]);
    const rows = JSON.parse(stdout) as {
      gpu: string;
      on_demand: { min: number; median: number; p90: number; offers: number } | null;
      spot: { min: number } | null;
      providers: string[];
    }[];
    const rtx = rows.find((r) => r.gpu === "RTX4090");
    assert.deepEqual(rtx?.providers, ["runpod", "tensordock", "vastai"]);
    assert.equal(rtx?.on_demand?.min, 0.29, "Vast's 2-GPU machine at $0.58/h is $0.29 per GPU-hour");
    assert.equal(rtx?.spot?.min, 0.165);
    assert.ok(rows.some((r) => r.gpu === "H100"));
  });

  it("takes an org's cloud credentials through the API: sealed at rest, never shown, used at once", async (t) => {
    const plain = await spawnServer({ HANGAR_OFFERS_CACHE_S: "0", HANGAR_MARKET_SNAPSHOT_S: "0" });
    t.after(() => stopServer(plain));
    const offersOf = async () =>
      await plain.client.request<{ offers: OfferView[]; failures: { provider: string; message: string }[] }>(
        "GET",
        "/api/v1/offers",
      );
    assert.ok(!(await offersOf()).offers.some((o) => o.provider === "vastai"), "no Vast.ai before");

    const put = (name: string, body: unknown) =>
      fetch(`${plain.url}/api/v1/providers/${name}/credentials`, {
        method: "PUT",
        headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const stored = await put("vastai", { api_key: vast.apiKey, api_url: vast.url });
    assert.equal(stored.status, 200);
    const view = (await stored.json()) as {
      providers: { name: string; configured_by: string | null; key_hint: string | null }[];
    };
    const vastView = view.providers.find((p) => p.name === "vastai");
    assert.deepEqual([vastView?.configured_by, vastView?.key_hint], ["org", `…${vast.apiKey.slice(-4)}`]);
    assert.ok(!JSON.stringify(view).includes(vast.apiKey), "the key is never returned");
    const offers = await offersOf();
    assert.ok(
      offers.offers.some((o) => o.provider === "vastai"),
      JSON.stringify(offers.failures),
    );

    // A wrong key is stored as given, and Vast's refusal shows where offers are asked for.
    assert.equal((await put("vastai", { api_key: "vast_wrong_key_9999", api_url: vast.url })).status, 200);
    const refused = await offersOf();
    assert.match(
      refused.failures.find((f) => f.provider === "vastai")?.message ?? "",
      /refused \(VAST_API_KEY\)/,
    );
    assert.ok(!JSON.stringify(refused).includes("vast_wrong_key_9999"));

    assert.equal((await put("gcp", { api_key: "k" })).status, 404);
    assert.equal((await put("vastai", { api_key: "two words" })).status, 400);
    assert.equal((await put("vastai", { api_key: "" })).status, 400);

    // At rest: no trace of either key in the database file or the server's log.
    const database = await readFile(join(plain.dataDir, "hangar.sqlite")).catch(() => Buffer.alloc(0));
    const wal = await readFile(join(plain.dataDir, "hangar.sqlite-wal")).catch(() => Buffer.alloc(0));
    assert.ok(database.length + wal.length > 0, "the database was read");
    for (const secret of [vast.apiKey, "vast_wrong_key_9999"]) {
      assert.ok(!database.includes(secret) && !wal.includes(secret), `${secret} is not in the database`);
      assert.ok(!plain.output().includes(secret), `${secret} is not in the log`);
    }

    // The CLI reads the key from standard input, so it never sits on a command line.
    const env = { ...process.env, HANGAR_URL: plain.url, HANGAR_API_KEY: TEST_API_KEY };
    const hangar = join(REPO_ROOT, "hangar");
    await exec("sh", ["-c", `printf '%s\\n' "$KEY" | "${hangar}" providers set vastai --url "${vast.url}"`], {
      env: { ...env, KEY: vast.apiKey },
    });
    const table = (await exec(hangar, ["providers"], { env })).stdout;
    assert.match(table, new RegExp(`vastai +yes +this org's key …${vast.apiKey.slice(-4)}`));
    assert.match(table, /runpod +no +none/);
    assert.ok((await offersOf()).offers.some((o) => o.provider === "vastai"));
    await exec(hangar, ["providers", "unset", "vastai"], { env });
    assert.ok(!(await offersOf()).offers.some((o) => o.provider === "vastai"), "gone with its credential");
    const again = await fetch(`${plain.url}/api/v1/providers/vastai/credentials`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
    });
    assert.equal(again.status, 404, "nothing left to delete");
  });

  it("keeps the market's history from periodic snapshots, and shows a price change in it", async (t) => {
    type Market = {
      gpus: { gpu: string; history: { taken_at: string; spot: boolean; min: number }[] }[];
      snapshot_every_s: number;
    };
    const snapshotting = await spawnServer({
      RUNPOD_API_KEY: runpod.apiKey,
      RUNPOD_GRAPHQL_URL: runpod.url,
      HANGAR_OFFERS_CACHE_S: "0",
      HANGAR_MARKET_SNAPSHOT_S: "1",
    });
    t.after(() => stopServer(snapshotting));
    const market = () => snapshotting.client.request<Market>("GET", "/api/v1/spot/market?history_days=1");
    const onDemandHistory = async () =>
      ((await market()).gpus.find((g) => g.gpu === "H100")?.history ?? []).filter((p) => !p.spot);
    await waitFor("two snapshots", async () => (await onDemandHistory()).length >= 2);
    const before = (await onDemandHistory()).length;
    // RunPod's H100 gets cheaper: the next snapshot records it.
    const h100 = runpod.catalog.find((t) => t.id === "NVIDIA H100 80GB HBM3")!;
    const was = h100.securePrice!;
    h100.securePrice = 1.11;
    t.after(() => {
      h100.securePrice = was;
    });
    const history = await waitFor("a snapshot after the change", async () => {
      const points = await onDemandHistory();
      return points.length > before && points.at(-1)!.min === 1.11 ? points : null;
    });
    assert.ok(history[0]!.min > 1.11, "earlier snapshots keep the earlier price");
    const times = history.map((p) => Date.parse(p.taken_at));
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
      "oldest first",
    );
    assert.equal((await market()).snapshot_every_s, 1);
    const none = await snapshotting.client.request<Market>("GET", "/api/v1/spot/market?history_days=0");
    assert.ok(
      none.gpus.every((g) => g.history.length <= 1),
      "history_days=0 reaches back no further than now",
    );
    const bad = await fetch(`${snapshotting.url}/api/v1/spot/market?history_days=31`, {
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
    });
    assert.equal(bad.status, 400);
  });
});
