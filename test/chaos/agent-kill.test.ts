import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { waitFor } from "../helpers/server.ts";
import { DIALECTS } from "../helpers/stores.ts";
import { type ChaosRig, ligands, SEQUENCE, startChaosRig } from "./rig.ts";

/**
 * Chaos: agents are killed -9 at random while a batch runs. Every child still completes within its
 * retry budget (3 attempts), and every attempt is charged once. `CHAOS_LIGANDS` and
 * `CHAOS_AGENT_KILLS` size the full run.
 */
const LIGANDS = Number(process.env.CHAOS_LIGANDS ?? 384);
const KILLS = Number(process.env.CHAOS_AGENT_KILLS ?? 2);

/** The pids of this server's agents (their environment names its data directory). */
async function agentPids(dataDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.includes("HANGAR_INSTANCE_ID=") && environ.includes(`HANGAR_WORK_DIR=${dataDir}`))
      pids.push(Number(pid));
  }
  return pids;
}

for (const dialect of DIALECTS) {
  describe(`chaos: agents killed -9 at random during a ${LIGANDS}-ligand batch (${dialect.name})`, {
    timeout: 600_000,
  }, () => {
    let rig: ChaosRig;
    before(async () => {
      rig = await startChaosRig(dialect);
    });
    after(() => rig.close());

    it("completes every child within its retry budget, and charges every attempt once", async () => {
      const { server, call } = rig;
      const { json: batch } = await call("/api/v1/predict/batch", {
        model: "boltz2",
        batch_name: "agent chaos",
        protein_sequence: SEQUENCE,
        ligands: ligands(LIGANDS),
        max_concurrent: LIGANDS,
      });
      const progress = async () => (await call(`/api/v1/batches/${batch.id}`)).json;
      let killed = 0;
      for (let kill = 0; kill < KILLS; kill++) {
        const running = await waitFor("children to run", async () => {
          const view = await progress();
          return view.progress.running > 0 ? view : null;
        });
        await sleep(200 + kill * 300);
        const pids = await agentPids(server.dataDir);
        const victim = pids[Math.floor(Math.random() * pids.length)];
        if (victim !== undefined && running.progress.completed < LIGANDS) {
          process.kill(victim, "SIGKILL");
          killed++;
        }
      }
      assert.equal(killed, KILLS, "each kill hit a live agent while the batch ran");
      const done = await waitFor(
        "the batch to end",
        async () => {
          const view = await progress();
          return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : null;
        },
        300_000,
      );
      assert.equal(done.status, "succeeded", JSON.stringify(done.progress));
      assert.deepEqual([done.progress.completed, done.progress.failed], [LIGANDS, 0]);
      const children = (await call(`/api/v1/batches/${batch.id}/children?limit=1000`)).json.children as {
        attempts: number;
      }[];
      assert.ok(
        children.every((child) => child.attempts <= 3),
        "within the retry budget of 3 attempts",
      );
      assert.ok(
        children.some((child) => child.attempts > 1),
        "the killed agents' children were retried",
      );

      const { json: usage } = await call("/api/v1/orgs/org_default/usage?group_by=model");
      const attempts = usage.rows.reduce((sum: number, row: { attempts: number }) => sum + row.attempts, 0);
      assert.equal(
        attempts,
        children.reduce((sum, child) => sum + child.attempts, 0),
        "every attempt recorded once",
      );
      const credits = await waitFor("the batch's hold to be settled", async () => {
        const { json: view } = await call("/api/v1/orgs/org_default/credits?limit=10000");
        return view.held === "0.000000" ? view : null;
      });
      const charges = credits.entries.filter(
        (e: { kind: string; key: string }) => e.kind === "charge" && e.key.startsWith("charge:"),
      );
      assert.equal(charges.length, attempts, "one charge per attempt");
    });
  });
}
