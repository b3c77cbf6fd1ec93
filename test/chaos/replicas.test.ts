import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { killAgentsOf, type ServerProcess, spawnServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";
import { DIALECTS, type StoreFixture, TEST_DATABASE_URL } from "../helpers/stores.ts";
import { installStandIn, ligands, SEQUENCE } from "./rig.ts";

/**
 * Chaos: three server replicas on one PostgreSQL schema, and every few seconds one of them, at
 * random, killed -9 and started again, while a Boltz-2 batch runs through the stand-in of ./rig.ts.
 * At the end: the batch succeeded with every child completed, no child was dispatched twice (no two
 * attempts of one child overlap in time, and the stand-in completed each SMILES once), every attempt
 * was recorded and charged once, and the replicas never held more local instances than their cap.
 *
 * The setup is a deployment's: the replicas share the database, the data directory (the `fs` blob
 * store, the signing secret and the deployment id live there, so any replica serves a URL another
 * signed), and one public URL, a round-robin TCP proxy written here, in front of them. Agents (launched
 * by whichever replica runs the provisioning loop) and signed URLs name the proxy, so a request cut
 * off by a kill is retried on a living replica, as behind a load balancer. The local provider's
 * instances are rows every replica sees and processes every replica can look up on this host.
 *
 * CI runs 256 ligands; the full run is 10,000:
 * `CHAOS_REPLICA_LIGANDS=10000 node --test test/chaos/replicas.test.ts`. `CHAOS_REPLICA_KILL_EVERY_S`
 * (2.5) is the mean time from one kill to the next; the victim is always back up before the next
 * kill, so two replicas of three serve at every moment, and a slow restart makes the next kill follow
 * it at once.
 */
const LIGANDS = Number(process.env.CHAOS_REPLICA_LIGANDS ?? 256);
const KILL_EVERY_S = Number(process.env.CHAOS_REPLICA_KILL_EVERY_S ?? 2.5);
const REPLICAS = 3;
/**
 * Longer than FAST_ENV's 3 s: with three servers, their agents and PostgreSQL on two shared cores, a
 * 64-child unit's claim answer and first heartbeat can take more than 3 s, and a lease that lapses
 * under a working agent (load, not a kill) lets its children run twice.
 */
const LEASE_S = 10;
/** The server's default `HANGAR_LOCAL_MAX_INSTANCES`, set here since the test checks it holds. */
const LOCAL_MAX_INSTANCES = 2;
/** Generous for a loaded 2-core machine: the full run takes a quarter of an hour there. */
const BATCH_TIMEOUT_MS = Math.max(300_000, LIGANDS * 250);

interface Proxy {
  url: string;
  close(): Promise<void>;
}

/**
 * Each connection goes to the next replica in turn that accepts it; one refused (a replica being
 * restarted) goes to the one after. A connection whose replica dies is cut, as a load balancer would.
 */
async function roundRobinProxy(ports: readonly number[]): Promise<Proxy> {
  let turn = 0;
  const open = new Set<Socket>();
  const track = (socket: Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
  };
  const server = createServer((client) => {
    track(client);
    client.pause();
    client.on("error", () => client.destroy());
    const forward = (triesLeft: number): void => {
      if (client.destroyed) return;
      if (triesLeft === 0 || ports.length === 0) {
        client.destroy();
        return;
      }
      const upstream = connect(ports[turn++ % ports.length]!, "127.0.0.1");
      track(upstream);
      upstream.once("error", () => forward(triesLeft - 1));
      upstream.once("connect", () => {
        upstream.removeAllListeners("error");
        upstream.on("error", () => upstream.destroy());
        upstream.once("close", (hadError) => (hadError ? client.destroy() : client.end()));
        client.once("close", () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    forward(3 * REPLICAS);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no proxy port");
  return {
    url: `http://127.0.0.1:${address.port}`,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}

const dialect = DIALECTS.find((d) => d.name === "postgres")!;

describe(`chaos: ${REPLICAS} replicas on one PostgreSQL, one killed -9 every ~${KILL_EVERY_S} s during a ${LIGANDS}-ligand batch`, {
  timeout: BATCH_TIMEOUT_MS + 120_000,
}, () => {
  let fixture: StoreFixture | undefined;
  let dir: string | undefined;
  let proxy: Proxy | undefined;
  const replicas: ServerProcess[] = [];
  const ports: number[] = [];
  let completedLog: string;
  let dataDir: string;
  let schema: string;

  /** The admin's API call through the proxy, retried when a kill cuts it off. */
  // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
  async function call(path: string, body?: unknown): Promise<{ status: number; json: any }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(`${proxy!.url}${path}`, {
          method: body === undefined ? "GET" : "POST",
          headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        // A replica killed mid-answer: reads are asked again; a POST is sent before the chaos starts.
        if (response.status >= 500 && body === undefined && attempt < 10) {
          await response.body?.cancel();
          await sleep(100);
          continue;
        }
        return { status: response.status, json: await response.json() };
      } catch (error) {
        if (body !== undefined || attempt >= 10) throw error;
        await sleep(100);
      }
    }
  }

  /** Reads this test's schema directly. */
  async function query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    try {
      await client.query(`set search_path to ${schema}`);
      return (await client.query<T>(text, values)).rows;
    } finally {
      await client.end();
    }
  }

  before(async () => {
    fixture = await dialect.fixture();
    schema = fixture.env.HANGAR_DATABASE_SCHEMA!;
    dir = await mkdtemp(join(tmpdir(), "hangar-replicas-"));
    await installStandIn(dir);
    completedLog = join(dir, "completed.log");
    dataDir = join(dir, "data");
    await mkdir(dataDir);
    proxy = await roundRobinProxy(ports);
    const env = {
      ...fixture.env,
      HANGAR_BOLTZ_CMD: join(dir, "boltz"),
      HANGAR_LOCAL_PRICE_PER_HOUR: "cpu:3.6",
      HANGAR_BILLING_INTERVAL_S: "1",
      HANGAR_PUBLIC_URL: proxy.url,
      HANGAR_LEASE_S: String(LEASE_S),
      HANGAR_LOCAL_MAX_INSTANCES: String(LOCAL_MAX_INSTANCES),
    };
    // The first creates the schema's tables and the data directory's secrets; the others share them.
    replicas.push(await spawnServer(env, { dataDir }));
    replicas.push(
      ...(await Promise.all(Array.from({ length: REPLICAS - 1 }, () => spawnServer(env, { dataDir })))),
    );
    ports.push(...replicas.map((replica) => Number(new URL(replica.url).port)));
  });

  after(async () => {
    await Promise.all(replicas.map((replica) => replica.kill("SIGTERM")));
    if (dataDir) await killAgentsOf(dataDir);
    await proxy?.close();
    await fixture?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("dispatches every child once, completes it once, and charges every attempt once", async (t) => {
    const started = Date.now();
    const batch = await call("/api/v1/predict/batch", {
      model: "boltz2",
      batch_name: "replica chaos",
      protein_sequence: SEQUENCE,
      ligands: ligands(LIGANDS),
      max_concurrent: LIGANDS,
    });
    assert.equal(batch.status, 201, JSON.stringify(batch.json));
    const batchId: string = batch.json.id;
    const progress = async () => (await call(`/api/v1/batches/${batchId}`)).json;
    await waitFor(
      "children to run",
      async () => {
        const view = await progress();
        return view.progress?.running > 0 ? view : null;
      },
      120_000,
    );

    // The chaos: a random replica killed -9, started again, and the next kill a few seconds after.
    let kills = 0;
    const restartMs: number[] = [];
    const calm = new AbortController();
    let chaosError: unknown;
    const chaos = (async () => {
      try {
        for (let lastKill = Date.now(); ; ) {
          // Counted from the last kill: a slow restart brings the next kill closer, never two at once.
          const pause = lastKill + KILL_EVERY_S * 1000 * (0.5 + Math.random()) - Date.now();
          await sleep(Math.max(0, pause), undefined, { signal: calm.signal });
          const victim = replicas[Math.floor(Math.random() * replicas.length)]!;
          await victim.kill("SIGKILL");
          lastKill = Date.now();
          kills++;
          await victim.restart();
          restartMs.push(Date.now() - lastKill);
        }
      } catch (error) {
        if (!calm.signal.aborted) chaosError = error;
      }
    })();
    let done: { status: string; progress: Record<string, number> };
    try {
      done = await waitFor(
        "the batch to end",
        async () => {
          const view = await progress();
          return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
        },
        BATCH_TIMEOUT_MS,
      );
    } finally {
      calm.abort();
      await chaos;
    }
    const seconds = (Date.now() - started) / 1000;
    assert.equal(chaosError, undefined, `a replica failed to restart: ${chaosError}`);
    assert.ok(kills > 0, "a replica was killed while the batch ran");
    assert.equal(done.status, "succeeded", JSON.stringify(done.progress));
    assert.deepEqual(
      [done.progress.completed, done.progress.failed, done.progress.cancelled],
      [LIGANDS, 0, 0],
      "no child lost or failed",
    );

    // Dispatched twice: two attempts of one child whose claims were live at the same time.
    const [overlaps] = await query<{ n: string }>(
      `select count(*) as n from usage_records a join usage_records b
         on a.job_id = b.job_id and a.attempt < b.attempt
        and b.started_at < a.ended_at and a.started_at < b.ended_at
        where a.batch_id = $1`,
      [batchId],
    );
    const [recorded] = await query<{ attempts: string; records: string; children: string }>(
      `select (select sum(attempts) from jobs where batch_id = $1) as attempts,
              (select count(*) from usage_records where batch_id = $1) as records,
              (select count(*) from jobs where batch_id = $1) as children`,
      [batchId],
    );
    // The replicas' provisioning passes never overlap: the local cap holds across the cluster.
    const [launched] = await query<{ instances: string; most: string }>(
      `select count(*) as instances, max((select count(*) from instances j where j.created_at <= i.created_at
                 and (j.terminated_at is null or j.terminated_at > i.created_at))) as most
         from instances i`,
    );
    const completed = (await readFile(completedLog, "utf8")).trim().split("\n");
    const runs = new Map<string, number>();
    for (const smiles of completed) runs.set(smiles, (runs.get(smiles) ?? 0) + 1);
    const twice = [...runs].filter(([, n]) => n > 1).map(([smiles]) => smiles);
    const attempts = Number(recorded!.attempts);
    t.diagnostic(
      `${LIGANDS} children in ${seconds.toFixed(1)} s; ${kills} kills (a restart took ` +
        `${(restartMs.reduce((sum, ms) => sum + ms, 0) / Math.max(1, restartMs.length) / 1000).toFixed(1)} s); ${attempts} attempts; ` +
        `${Number(overlaps!.n)} double dispatches; ${twice.length} double completions; ` +
        `${launched!.instances} instances launched, at most ${launched!.most} at once`,
    );
    assert.equal(Number(recorded!.children), LIGANDS);
    assert.ok(Number(launched!.most) <= LOCAL_MAX_INSTANCES, `${launched!.most} local instances at once`);
    assert.equal(Number(overlaps!.n), 0, "no child dispatched while an earlier claim of it was live");
    assert.equal(runs.size, LIGANDS, "every child ran to completion");
    assert.deepEqual(twice, [], "no child ran to completion twice");
    // A claim whose answer was lost with its replica is retried once its lease lapses: an extra attempt.
    assert.ok(attempts >= LIGANDS, `${attempts} attempts`);
    assert.equal(Number(recorded!.records), attempts, "every attempt recorded once");

    // Every attempt is charged once: the ledger's charges are exactly the usage records' costs.
    const usage = (await call("/api/v1/orgs/org_default/usage?group_by=model")).json;
    assert.equal(
      usage.rows.reduce((sum: number, row: { attempts: number }) => sum + row.attempts, 0),
      attempts,
      "the usage API counts every attempt",
    );
    await waitFor("the batch's hold to be settled", async () => {
      const view = (await call("/api/v1/orgs/org_default/credits?limit=1")).json;
      return view.held === "0.000000" ? view : null;
    });
    const [charges] = await query<{ n: string; micro: string | null }>(
      `select count(*) as n, sum(amount_micro) as micro from ledger_entries
        where org_id = 'org_default' and kind = 'charge' and entry_key like 'charge:%'`,
    );
    assert.equal(Number(charges!.n), attempts, "one charge per attempt");
    assert.equal(
      Number(charges!.micro ?? 0),
      Math.round(Number(usage.total) * 1e6),
      "charges equal the usage recorded",
    );
  });
});
