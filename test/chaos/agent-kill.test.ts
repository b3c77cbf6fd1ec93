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

/** Whether `pid`'s environment contains `needle` (false once it has exited). */
async function environHas(pid: string, needle: string): Promise<boolean> {
  return (await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "")).includes(needle);
}

/**
 * The pids of this server's agents that are running a model process now: the stand-in's parents. An
 * agent between units holds no children, so killing it would test nothing.
 */
async function busyAgentPids(dataDir: string, standIn: string): Promise<number[]> {
  const busy = new Set<number>();
  for (const pid of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "latin1").catch(() => "");
    if (!cmdline.includes(standIn)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, "latin1").catch(() => "");
    const parent = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1];
    if (
      parent &&
      (await environHas(parent, "HANGAR_INSTANCE_ID=")) &&
      (await environHas(parent, `HANGAR_WORK_DIR=${dataDir}`))
    )
      busy.add(Number(parent));
  }
  return [...busy];
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
        const busy = await waitFor("an agent to run a model process", async () => {
          const pids = await busyAgentPids(server.dataDir, rig.standIn);
          return pids.length > 0 ? pids : null;
        });
        if ((await progress()).progress.completed < LIGANDS) {
          process.kill(busy[Math.floor(Math.random() * busy.length)]!, "SIGKILL");
          killed++;
        }
        await sleep(300);
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
        id: string;
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

      // An attempt handed back unspent (its claim's answer never reached the killed agent) keeps its
      // number for the next claim, so a child has one usage record per attempt plus one per handback;
      // records never overlap, and every attempt the child counts has one.
      let records = 0;
      let paid = 0;
      for (const child of children) {
        const { json: usage } = await call(`/api/v1/runs/${child.id}/usage`);
        const spans = (
          usage.attempts as { attempt: number; started_at: string; ended_at: string; cost: string }[]
        )
          .map((a) => ({ ...a, start: Date.parse(a.started_at), end: Date.parse(a.ended_at) }))
          .sort((a, b) => a.start - b.start);
        for (let i = 1; i < spans.length; i++) {
          assert.ok(spans[i]!.start >= spans[i - 1]!.end, `${child.id}: attempts overlap`);
        }
        assert.deepEqual(
          [...new Set(spans.map((a) => a.attempt))],
          Array.from({ length: child.attempts }, (_, i) => i + 1),
          `${child.id}: one record per attempt`,
        );
        records += spans.length;
        paid += spans.filter((a) => Number(a.cost) > 0).length;
      }
      const { json: usage } = await call("/api/v1/orgs/org_default/usage?group_by=model");
      assert.equal(
        usage.rows.reduce((sum: number, row: { attempts: number }) => sum + row.attempts, 0),
        records,
        "the org's usage counts every record once",
      );
      const credits = await waitFor("the batch's hold to be settled", async () => {
        const { json: view } = await call("/api/v1/orgs/org_default/credits?limit=10000");
        return view.held === "0.000000" ? view : null;
      });
      const charges = credits.entries.filter(
        (e: { kind: string; key: string }) => e.kind === "charge" && e.key.startsWith("charge:"),
      );
      assert.equal(charges.length, paid, "one charge per attempt that cost anything");
    });
  });
}
