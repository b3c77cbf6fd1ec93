import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { submitNotebookRun, waitForRun } from "../../src/cli/commands.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { spawnServer, stopServer } from "../helpers/server.ts";

describe("an instance's maximum lifetime", () => {
  it("ends the instance once it is up, after its work, with the reason in its log", {
    timeout: 90_000,
  }, async (t) => {
    // A normal lease: the test defaults would count an agent in its 20 s claim long-poll as silent.
    const server = await spawnServer({
      HANGAR_INSTANCE_MAX_LIFETIME_S: "4",
      HANGAR_LEASE_S: "30",
      HANGAR_HEARTBEAT_S: "5",
    });
    t.after(() => stopServer(server));
    const submitted = await submitNotebookRun(server.client, join(REPO_ROOT, "examples/sales-report.ipynb"), {
      dataset: [join(REPO_ROOT, "examples/data")],
      param: [],
    });
    const run = await waitForRun(server.client, submitted.id, false);
    assert.equal(run.status, "succeeded");
    const instancesDir = join(server.dataDir, "instances");
    const [instance] = await readdir(instancesDir);
    assert.ok(instance, "one instance was launched");
    const logPath = join(instancesDir, instance, "agent.log");
    let log = "";
    // An idle agent finishes its claim long-poll (up to 20 s) before it stops: aborting a claim in
    // flight could strand a job until its lease lapses.
    for (let i = 0; i < 400 && !log.includes('"msg":"kill switch"'); i++) {
      await sleep(100);
      log = await readFile(logPath, "utf8");
    }
    assert.match(log, /"msg":"maximum lifetime reached; stopping","max_lifetime_s":4/);
    assert.match(
      log,
      /"msg":"kill switch","why":"maximum lifetime reached","did":"exited \(the agent's process is the instance\)"/,
    );
  });
});
