import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnServer, stopServer } from "../helpers/server.ts";

/** A detached process that looks, to the local provider's list, like an agent carrying these labels. */
function fakeAgent(labels: { deployment: string; instance: string }) {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
    env: {
      PATH: process.env.PATH ?? "",
      HANGAR_INSTANCE_ID: labels.instance,
      HANGAR_LABEL_HANGAR_DEPLOYMENT: labels.deployment,
      HANGAR_LABEL_HANGAR_INSTANCE: labels.instance,
    },
    detached: true,
    stdio: "ignore",
  });
  child.unref();
  const alive = () => {
    try {
      process.kill(child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    pid: child.pid!,
    alive,
    exited: new Promise((resolve) => child.once("exit", resolve)),
    kill: () => alive() && process.kill(-child.pid!, "SIGKILL"),
  };
}

describe("the reconciler", () => {
  it("terminates an instance of this deployment that the database does not know, and nothing else", async (t) => {
    const server = await spawnServer({ HANGAR_RECONCILE_INTERVAL_S: "1" });
    t.after(() => stopServer(server));
    const deployment = (await readFile(join(server.dataDir, "deployment-id"), "utf8")).trim();
    const stray = fakeAgent({ deployment, instance: "inst_never_launched_here" });
    const foreign = fakeAgent({ deployment: "hgr-another-deployment", instance: "inst_theirs" });
    t.after(() => {
      stray.kill();
      foreign.kill();
    });
    const ended = await Promise.race([stray.exited.then(() => true), sleep(10_000).then(() => false)]);
    assert.ok(ended, `the stray was not terminated:\n${server.output()}`);
    // The server's log is written asynchronously: give the line a moment to arrive.
    for (let i = 0; i < 50 && !server.output().includes("terminating a stray instance"); i++)
      await sleep(100);
    assert.match(server.output(), /terminating a stray instance/);
    assert.match(server.output(), /unknown to the database \(inst_never_launched_here\)/);
    assert.ok(foreign.alive(), "another deployment's instance is left alone");
    const health = (await (await fetch(`${server.url}/healthz`)).json()) as {
      instances_refusing_termination: unknown[];
    };
    assert.deepEqual(health.instances_refusing_termination, []);
  });
});
