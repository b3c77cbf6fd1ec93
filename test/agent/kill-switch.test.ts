import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { selfTerminator } from "../../src/agent/kill-switch.ts";
import { REPO_ROOT } from "../../src/server/server.ts";
import { type RunPodEmulator, startRunPodEmulator } from "../emulators/runpod.ts";
import { freePort } from "../helpers/server.ts";

describe("the agent's kill switch", () => {
  let runpod: RunPodEmulator;
  before(async () => {
    runpod = await startRunPodEmulator();
  });
  after(() => runpod.close());

  it("terminates its own RunPod pod with the pod-scoped key, and counts a pod already gone as done", async () => {
    const { podKey } = runpod.addPod("pod-self");
    const terminate = selfTerminator({
      RUNPOD_POD_ID: "pod-self",
      RUNPOD_API_KEY: podKey,
      RUNPOD_GRAPHQL_URL: runpod.url,
    });
    assert.equal(await terminate(), "terminated RunPod pod pod-self");
    assert.equal(runpod.pods.get("pod-self")?.desiredStatus, "TERMINATED");
    assert.equal(
      await terminate(),
      "terminated RunPod pod pod-self",
      "pod not found to terminate is success",
    );
  });

  it("fails loudly when the provider refuses, and only exits where the process is the instance", async () => {
    const { podKey } = runpod.addPod("pod-a");
    runpod.addPod("pod-b");
    const wrong = selfTerminator({
      RUNPOD_POD_ID: "pod-b",
      RUNPOD_API_KEY: podKey,
      RUNPOD_GRAPHQL_URL: runpod.url,
    });
    await assert.rejects(wrong(), /Unauthorized/);
    assert.equal(runpod.pods.get("pod-b")?.desiredStatus, "RUNNING");
    assert.equal(await selfTerminator({})(), "exited (the agent's process is the instance)");
  });

  it("trips when the control plane stays unreachable: the real agent ends its pod and exits", async () => {
    const { podKey } = runpod.addPod("pod-orphan");
    const port = await freePort();
    const agent = spawn(process.execPath, [join(REPO_ROOT, "dist/agent.mjs")], {
      env: {
        PATH: process.env.PATH ?? "",
        HANGAR_URL: `http://127.0.0.1:${port}`,
        HANGAR_INSTANCE_ID: "inst_orphan",
        HANGAR_BOOTSTRAP_TOKEN: "unused",
        HANGAR_AGENT_RECONNECT_S: "1",
        RUNPOD_POD_ID: "pod-orphan",
        RUNPOD_API_KEY: podKey,
        RUNPOD_GRAPHQL_URL: runpod.url,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    agent.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const code = await new Promise((resolve) => agent.once("exit", resolve));
    assert.equal(code, 1);
    assert.match(
      output,
      /"msg":"kill switch","why":"control plane unreachable","did":"terminated RunPod pod pod-orphan"/,
    );
    assert.equal(runpod.pods.get("pod-orphan")?.desiredStatus, "TERMINATED");
  });
});
