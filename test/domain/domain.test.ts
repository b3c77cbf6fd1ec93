import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseNotebook } from "../../src/app/notebooks.ts";
import { progressLine } from "../../src/cli/progress.ts";
import { DEFAULT_RETRY_POLICY, LaunchBackoff, retryDelayMs } from "../../src/domain/backoff.ts";
import { readyUnits } from "../../src/domain/batch.ts";
import { HangarError } from "../../src/domain/errors.ts";
import { normaliseGpuType } from "../../src/domain/gpu.ts";
import { canTransition, sourcesFor } from "../../src/domain/instance.ts";
import { canCancel, decideAfterFailure } from "../../src/domain/job.ts";
import { parseParameterAssignment, validateParameters } from "../../src/domain/parameters.ts";
import { parseNvidiaSmi } from "../../src/providers/local/gpu-detect.ts";

describe("backoff", () => {
  it("doubles from the minimum and stops at the maximum, jittered within [delay/2, delay]", () => {
    const policy = DEFAULT_RETRY_POLICY;
    assert.equal(
      retryDelayMs(policy, 1, () => 1),
      10_000,
    );
    assert.equal(
      retryDelayMs(policy, 2, () => 1),
      20_000,
    );
    assert.equal(
      retryDelayMs(policy, 3, () => 1),
      40_000,
    );
    assert.equal(
      retryDelayMs(policy, 10, () => 1),
      300_000,
    );
    assert.equal(
      retryDelayMs(policy, 10, () => 0),
      150_000,
    );
    assert.equal(
      retryDelayMs(policy, 1, () => 0),
      10_000,
      "never below the minimum",
    );
  });
});

describe("launch backoff", () => {
  it("pauses launches longer after each boot failure in a row, up to five minutes", () => {
    const guard = new LaunchBackoff(() => 1);
    assert.ok(guard.mayLaunch(0));
    assert.equal(guard.bootFailed(1_000), 3_000);
    assert.ok(!guard.mayLaunch(2_999));
    assert.ok(guard.mayLaunch(3_000));
    assert.equal(guard.bootFailed(3_000), 7_000);
    for (let i = 0; i < 20; i++) guard.bootFailed(10_000);
    assert.equal(guard.bootFailed(10_000), 310_000);
    assert.equal(guard.failuresInARow, 23);
  });

  it("resumes at once when an agent registers after the last failure, not before it", () => {
    const guard = new LaunchBackoff(() => 1);
    guard.bootFailed(5_000);
    guard.agentRegistered(4_000);
    assert.ok(!guard.mayLaunch(5_001), "an older registration says nothing about the new failures");
    guard.agentRegistered(5_500);
    assert.ok(guard.mayLaunch(5_501));
    assert.equal(guard.failuresInARow, 0);
  });
});

describe("failure decisions", () => {
  const job = { attempts: 1, maxAttempts: 3, backoffMinMs: 1000, backoffMaxMs: 8000, cancelRequested: false };
  it("requeues a retryable failure after a backoff", () => {
    assert.deepEqual(
      decideAfterFailure(job, { retryable: true }, 100, () => 1),
      { status: "queued", runAt: 1100 },
    );
  });
  it("fails when attempts are spent or the failure is permanent", () => {
    assert.deepEqual(decideAfterFailure({ ...job, attempts: 3 }, { retryable: true }, 0), {
      status: "failed",
    });
    assert.deepEqual(decideAfterFailure(job, { retryable: false }, 0), { status: "failed" });
  });
  it("cancels instead of retrying when a cancel is pending", () => {
    assert.deepEqual(decideAfterFailure({ ...job, cancelRequested: true }, { retryable: true }, 0), {
      status: "cancelled",
    });
  });
  it("allows cancelling only unfinished runs", () => {
    assert.equal(canCancel("queued"), true);
    assert.equal(canCancel("running"), true);
    assert.equal(canCancel("succeeded"), false);
    assert.equal(canCancel("cancelled"), false);
  });
});

describe("instance lifecycle", () => {
  it("follows provisioning → ready → busy → idle → terminated", () => {
    assert.ok(canTransition("provisioning", "ready"));
    assert.ok(canTransition("ready", "busy"));
    assert.ok(canTransition("busy", "idle"));
    assert.ok(canTransition("idle", "terminated"));
    assert.ok(!canTransition("terminated", "ready"));
    assert.ok(!canTransition("provisioning", "busy"));
    assert.ok(!canTransition("busy", "busy"));
    assert.deepEqual(sourcesFor("busy", ["ready", "idle", "busy", "terminated"]), ["ready", "idle"]);
    assert.deepEqual(sourcesFor("ready", ["terminated"]), []);
  });
});

describe("parameters", () => {
  it("parses values as JSON when they are JSON, else as strings", () => {
    assert.deepEqual(parseParameterAssignment("n=3"), ["n", 3]);
    assert.deepEqual(parseParameterAssignment("flags=[1,2]"), ["flags", [1, 2]]);
    assert.deepEqual(parseParameterAssignment("name=north"), ["name", "north"]);
    assert.deepEqual(parseParameterAssignment('quoted="3"'), ["quoted", "3"]);
    assert.deepEqual(parseParameterAssignment("expr=a=b"), ["expr", "a=b"]);
  });
  it("refuses names that cannot be Python variables", () => {
    for (const bad of ["=3", "1x=3", "class=1", "a-b=2"]) {
      assert.throws(
        () => parseParameterAssignment(bad),
        (e: HangarError) => e.code === "invalid_parameter",
      );
    }
    assert.throws(() => validateParameters({ None: 1 }), HangarError);
  });
});

describe("GPU types", () => {
  it("normalises known names and rejects unknown ones", () => {
    assert.equal(normaliseGpuType("a100-80gb"), "A100-80GB");
    assert.equal(normaliseGpuType(" h100 "), "H100");
    assert.equal(normaliseGpuType("Z80"), null);
  });
  it("reads nvidia-smi's CSV", () => {
    assert.deepEqual(parseNvidiaSmi("0, NVIDIA H200, 143771\n1, NVIDIA H200, 143771\n"), [
      { index: 0, name: "NVIDIA H200", memoryMiB: 143771 },
      { index: 1, name: "NVIDIA H200", memoryMiB: 143771 },
    ]);
    assert.deepEqual(parseNvidiaSmi(""), []);
  });
});

describe("notebook validation", () => {
  it("accepts nbformat 4 and counts cells", () => {
    assert.deepEqual(parseNotebook(Buffer.from('{"nbformat":4,"cells":[{},{}]}'), "a.ipynb"), {
      cellCount: 2,
    });
  });
  it("names the problem with a stable code", () => {
    const code = (text: string) => {
      try {
        parseNotebook(Buffer.from(text), "a.ipynb");
        return "accepted";
      } catch (error) {
        return (error as HangarError).code;
      }
    };
    assert.equal(code("nope"), "invalid_notebook");
    assert.equal(code("[]"), "invalid_notebook");
    assert.equal(code('{"cells":[]}'), "invalid_notebook");
    assert.equal(code('{"nbformat":3,"worksheets":[]}'), "unsupported_nbformat");
    assert.equal(code('{"nbformat":4,"cells":{}}'), "invalid_notebook");
  });
});

describe("progress line", () => {
  it("shows cells done, elapsed time and the phase", () => {
    const line = progressLine(
      {
        id: "run_1",
        notebook_id: "nb_1",
        status: "running",
        attempts: 2,
        max_attempts: 3,
        created_at: "",
        started_at: null,
        finished_at: null,
        progress: { done: 3, total: 6, phase: "running cell 4/6" },
        instance: null,
        error: null,
      },
      12_340,
    );
    assert.equal(line, "[############............] 3/6 cells  12.3s  running cell 4/6 attempt 2/3");
  });
});

describe("ready work", () => {
  it("counts a batch by the processes its startable children fill, not as one", () => {
    const perProcess = (model: string) => (model === "boltz2" ? 64 : 1);
    assert.equal(
      readyUnits({ jobs: 0, gpuJobs: [], batches: [{ model: "vina", startable: 20 }] }, perProcess),
      20,
    );
    assert.equal(
      readyUnits({ jobs: 2, gpuJobs: [], batches: [{ model: "boltz2", startable: 100 }] }, perProcess),
      4,
    );
    assert.equal(
      readyUnits({ jobs: 0, gpuJobs: [], batches: [{ model: "boltz2", startable: 0 }] }, perProcess),
      0,
    );
  });
});
