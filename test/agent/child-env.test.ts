import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { childEnv, modelEnv } from "../../src/agent/child-env.ts";

const AGENT_ENV = {
  PATH: "/usr/bin",
  HANGAR_URL: "http://control-plane",
  HANGAR_BOOTSTRAP_TOKEN: "secret-token",
  HANGAR_VINA_CMD: "/opt/vina/bin/vina",
  HANGAR_BOLTZ_CACHE: "/models/boltz",
};

describe("environments of processes the agent starts", () => {
  it("gives notebooks none of the agent's own settings", () => {
    assert.deepEqual(childEnv(AGENT_ENV, { HANGAR_INPUT_DIR: "/in" }), {
      PATH: "/usr/bin",
      HANGAR_INPUT_DIR: "/in",
    });
  });

  it("gives models their settings but no agent secrets, and caps OpenMP to their share of the cores", () => {
    const env = modelEnv(AGENT_ENV, 1);
    assert.equal(env.HANGAR_VINA_CMD, "/opt/vina/bin/vina");
    assert.equal(env.HANGAR_BOLTZ_CACHE, "/models/boltz");
    assert.equal(env.HANGAR_BOOTSTRAP_TOKEN, undefined);
    assert.equal(env.HANGAR_URL, undefined);
    assert.equal(env.OMP_NUM_THREADS, "1");
    assert.equal(modelEnv(AGENT_ENV, 0).OMP_NUM_THREADS, "1", "never zero threads");
    assert.equal(
      modelEnv({ ...AGENT_ENV, OMP_NUM_THREADS: "6" }, 2).OMP_NUM_THREADS,
      "6",
      "the instance's own wins",
    );
  });
});
