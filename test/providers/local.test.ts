import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AGENT_PID_ENV } from "../../src/agent/child-env.ts";
import { LocalProvider } from "../../src/providers/local/local-provider.ts";
import { runComputeConformance } from "./compute-conformance.ts";
import { runOfferSourceConformance } from "./offer-conformance.ts";

const local = (gpus: { index: number; name: string; memoryMiB: number }[]) =>
  new LocalProvider({ agentCommand: ["true"], maxInstances: 1, gpus, workRoot: "/nonexistent" });

runOfferSourceConformance("local", async () => ({ source: local([]), close: async () => {} }));

describe("LocalProvider offers", () => {
  it("offers this machine at no cost: one CPU offer without GPUs", async () => {
    const [offer, ...rest] = await local([]).offers({});
    assert.equal(rest.length, 0);
    assert.equal(offer?.gpu, "CPU");
    assert.equal(offer?.gpuCount, 0);
    assert.equal(offer?.pricePerHour, 0);
    assert.ok((offer?.vcpus ?? 0) >= 1);
  });

  it("offers one machine per GPU type, named as Hangar names them", async () => {
    const offers = await local([
      { index: 0, name: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564 },
      { index: 1, name: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564 },
      { index: 2, name: "NVIDIA H200", memoryMiB: 143_771 },
    ]).offers({});
    assert.deepEqual(
      offers.map((o) => [o.gpu, o.gpuCount, o.gpuMemoryGb]),
      [
        ["RTX4090", 2, 24],
        ["H200", 1, 140],
      ],
    );
  });
});

describe("LocalProvider instances at the provider", () => {
  it("lists its agent processes by label, and no longer once terminated", async (t) => {
    const workRoot = await mkdtemp(join(tmpdir(), "hangar-local-list-"));
    t.after(() => rm(workRoot, { recursive: true, force: true }));
    const provider = new LocalProvider({
      agentCommand: [process.execPath, "-e", "setInterval(() => {}, 1000)"],
      maxInstances: 2,
      gpus: [],
      workRoot,
    });
    const deployment = `hgr-test-${process.pid}-${Date.now()}`;
    const launched = await provider.launch({
      instanceId: "inst_listed",
      agentEnv: { HANGAR_INSTANCE_ID: "inst_listed" },
      gpus: [],
      labels: { hangar_deployment: deployment, hangar_instance: "inst_listed" },
      offer: null,
      image: "",
      bootstrapCommand: "",
      diskGb: 0,
    });
    t.after(() => provider.terminate(launched.providerInstanceId));
    assert.deepEqual(await provider.list({ hangar_deployment: deployment }), [
      {
        providerInstanceId: launched.providerInstanceId,
        labels: { hangar_deployment: deployment, hangar_instance: "inst_listed" },
      },
    ]);
    assert.deepEqual(await provider.list({ hangar_deployment: "another-deployment" }), []);
    await provider.terminate(launched.providerInstanceId);
    for (let i = 0; i < 50 && (await provider.list({ hangar_deployment: deployment })).length > 0; i++) {
      await sleep(100);
    }
    assert.deepEqual(await provider.list({ hangar_deployment: deployment }), []);
  });
  it("ends the model processes of an agent killed with SIGKILL, which lead process groups of their own", async (t) => {
    const workRoot = await mkdtemp(join(tmpdir(), "hangar-local-orphans-"));
    t.after(() => rm(workRoot, { recursive: true, force: true }));
    // Stands in for an agent running a model: the model process is detached and carries the agent's pid,
    // as runModelProcess starts it; its pid is written to the agent's work directory.
    const agent = `
      const { spawn } = require("node:child_process");
      const model = spawn("sleep", ["300"], {
        detached: true, stdio: "ignore", env: { ...process.env, ${AGENT_PID_ENV}: String(process.pid) },
      });
      require("node:fs").writeFileSync("model.pid", String(model.pid));
      setInterval(() => {}, 1000);`;
    const provider = new LocalProvider({
      agentCommand: [process.execPath, "-e", agent],
      maxInstances: 1,
      gpus: [],
      workRoot,
    });
    const launched = await provider.launch({
      instanceId: "inst_orphans",
      agentEnv: { HANGAR_INSTANCE_ID: "inst_orphans" },
      gpus: [],
      labels: { hangar_instance: "inst_orphans" },
      offer: null,
      image: "",
      bootstrapCommand: "",
      diskGb: 0,
    });
    const pidFile = join(workRoot, "inst_orphans", "model.pid");
    let modelPid = 0;
    for (let i = 0; i < 100 && !modelPid; i++) {
      modelPid = Number(await readFile(pidFile, "utf8").catch(() => "0"));
      if (!modelPid) await sleep(50);
    }
    assert.ok(modelPid > 0, "the stand-in agent started its model process");
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    t.after(() => {
      if (alive(modelPid)) process.kill(modelPid, "SIGKILL");
    });
    process.kill(Number(launched.providerInstanceId.split(":")[1]), "SIGKILL");
    for (let i = 0; i < 50 && (await provider.describe(launched.providerInstanceId)) === "running"; i++) {
      await sleep(50);
    }
    assert.equal(await provider.describe(launched.providerInstanceId), "gone");
    assert.ok(alive(modelPid), "the model process outlives its agent's SIGKILL");
    await provider.terminate(launched.providerInstanceId);
    for (let i = 0; i < 50 && alive(modelPid); i++) await sleep(50);
    assert.equal(alive(modelPid), false, "terminating the instance ended its model process");
  });
});

runComputeConformance("local", async () => {
  const workRoot = await mkdtemp(join(tmpdir(), "hangar-local-conformance-"));
  const provider = new LocalProvider({
    // Stands in for the agent: a process that lives until it is ended, with the agent's environment.
    agentCommand: [process.execPath, "-e", "setInterval(() => {}, 1000)"],
    maxInstances: 4,
    gpus: [],
    workRoot,
  });
  return {
    provider,
    offer: async () => null,
    bootstrapCommand: "",
    close: () => rm(workRoot, { recursive: true, force: true }),
  };
});
