import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";
import { installStandIn, ligands, SEQUENCE } from "./stand-in.ts";

/**
 * Chaos: the server is killed -9 again and again while a batch runs, and started again each time.
 * At the end: every child completed, none was run to completion twice, and no attempt was charged
 * twice. CI runs the short version; `CHAOS_LIGANDS=1000 CHAOS_KILLS=5` is the full one.
 * The model is the stand-in of ./stand-in.ts.
 */
const LIGANDS = Number(process.env.CHAOS_LIGANDS ?? 384);
const KILLS = Number(process.env.CHAOS_KILLS ?? 3);

for (const dialect of DIALECTS) {
  describe(`chaos: the server killed -9 ${KILLS} times during a ${LIGANDS}-ligand batch (${dialect.name})`, {
    timeout: 600_000,
  }, () => {
    let fixture: StoreFixture;
    let server: ServerProcess;
    let dir: string;

    before(async () => {
      fixture = await dialect.fixture();
      dir = await mkdtemp(join(tmpdir(), "hangar-chaos-"));
      await installStandIn(dir);
      server = await spawnServer({
        ...fixture.env,
        HANGAR_BOLTZ_CMD: join(dir, "boltz"),
        // Priced, so charges can be counted: 3.6 $/h is 1 µ per ms.
        HANGAR_LOCAL_PRICE_PER_HOUR: "cpu:3.6",
        HANGAR_BILLING_INTERVAL_S: "1",
      });
    });
    after(async () => {
      await stopServer(server);
      await fixture.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    it("completes every child once, and charges every attempt once", async () => {
      const call = async (path: string, body?: unknown) => {
        const response = await fetch(`${server.url}${path}`, {
          method: body === undefined ? "GET" : "POST",
          headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
        return { status: response.status, json: (await response.json()) as any };
      };
      const batch = await call("/api/v1/predict/batch", {
        model: "boltz2",
        batch_name: "chaos",
        protein_sequence: SEQUENCE,
        ligands: ligands(LIGANDS),
        max_concurrent: LIGANDS,
      });
      assert.equal(batch.status, 201, JSON.stringify(batch.json));
      const progress = async () => (await call(`/api/v1/batches/${batch.json.id}`)).json;
      for (let kill = 0; kill < KILLS; kill++) {
        // Kill while children are being worked on, at a different point each time.
        const running = await waitFor("children to run", async () => {
          const view = await progress();
          return view.progress.running > 0 ? view : null;
        });
        await sleep(100 + kill * 150);
        await server.kill("SIGKILL");
        assert.ok(running.progress.completed < LIGANDS, `kill ${kill + 1} came while the batch ran`);
        await sleep(300);
        await server.restart();
      }
      const done = await waitFor(
        "the batch to end",
        async () => {
          const view = await progress();
          return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
        },
        300_000,
      );
      assert.equal(done.status, "succeeded", JSON.stringify(done.progress));
      assert.deepEqual(
        [done.progress.completed, done.progress.failed, done.progress.cancelled],
        [LIGANDS, 0, 0],
        "no child lost or failed",
      );
      const completed = (await readFile(join(dir, "completed.log"), "utf8")).trim().split("\n");
      const twice = completed.filter((smiles, i) => completed.indexOf(smiles) !== i);
      assert.equal(new Set(completed).size, LIGANDS, "every child ran to completion");
      assert.deepEqual(twice, [], "no child ran to completion twice");

      // Every attempt is charged once: the ledger's charges are exactly the usage records' costs.
      const usage = (await call("/api/v1/orgs/org_default/usage?group_by=model")).json;
      const attempts = usage.rows.reduce((sum: number, row: { attempts: number }) => sum + row.attempts, 0);
      // A claim whose answer was lost with the server is retried once its lease lapses: an extra attempt, never a second completion.
      assert.ok(attempts >= LIGANDS, `${attempts} attempts`);
      const credits = await waitFor("the batch's hold to be settled", async () => {
        const view = (await call("/api/v1/orgs/org_default/credits?limit=10000")).json;
        return view.held === "0.000000" ? view : null;
      });
      const charges = credits.entries.filter(
        (e: { kind: string; key: string }) => e.kind === "charge" && e.key.startsWith("charge:"),
      );
      assert.equal(charges.length, attempts, "one charge per attempt");
      const charged = charges.reduce(
        (sum: number, e: { amount: string }) => sum + Math.round(Number(e.amount) * 1e6),
        0,
      );
      assert.equal(charged, Math.round(Number(usage.total) * 1e6), "charges equal the usage recorded");
    });
  });
}
