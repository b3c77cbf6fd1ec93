import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { waitFor } from "../helpers/server.ts";
import { DIALECTS } from "../helpers/stores.ts";
import { type ChaosRig, ligands, SEQUENCE, startChaosRig } from "./rig.ts";

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
    let rig: ChaosRig;
    before(async () => {
      rig = await startChaosRig(dialect);
    });
    after(() => rig.close());

    it("completes every child once, and charges every attempt once", async () => {
      const { server, call } = rig;
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
      const completed = (await readFile(rig.completedLog, "utf8")).trim().split("\n");
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
