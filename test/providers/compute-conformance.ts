import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Offer } from "../../src/domain/offers.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL } from "../../src/domain/reconcile.ts";
import { ProviderApiError } from "../../src/providers/http.ts";
import type { ComputeProvider, LaunchSpec, ProviderInstanceStatus } from "../../src/providers/provider.ts";
import type { FaultQueue } from "../emulators/http.ts";

export interface ComputeHarness {
  provider: ComputeProvider;
  /** An offer this provider can launch now; null for providers that launch no offers (local). */
  offer(): Promise<Offer | null>;
  /** A bootstrap command that keeps the instance up until it is ended (stands in for the agent). */
  bootstrapCommand: string;
  /** Faults the provider's API answers with next, where it is an emulator. */
  faults?: FaultQueue;
  /** The provider's next launch finds no capacity, where the emulator can say so. */
  refuseNextLaunch?(): void;
  close(): Promise<void>;
}

/** A deployment label unique to one run of the suite, so parallel runs never see each other's instances. */
const deployment = () => `conf-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

async function eventually(
  provider: ComputeProvider,
  id: string,
  wanted: readonly ProviderInstanceStatus[],
  timeoutMs = 15_000,
): Promise<ProviderInstanceStatus> {
  const deadline = Date.now() + timeoutMs;
  let status = await provider.describe(id);
  while (!wanted.includes(status) && Date.now() < deadline) {
    await sleep(100);
    status = await provider.describe(id);
  }
  assert.ok(wanted.includes(status), `${id} is ${status}, wanted ${wanted.join(" or ")}`);
  return status;
}

/**
 * What every compute provider must do, registered as node:test cases against one harness: launch
 * with labels, describe through boot, list by labels, terminate idempotently, and refuse cleanly.
 * It runs unchanged against every provider (the clouds against their emulators).
 */
export function runComputeConformance(name: string, open: () => Promise<ComputeHarness>): void {
  describe(`ComputeProvider conformance: ${name}`, () => {
    let harness: ComputeHarness;
    const launched: string[] = [];
    before(async () => {
      harness = await open();
    });
    after(async () => {
      for (const id of launched) await harness.provider.terminate(id).catch(() => undefined);
      await harness.close();
    });

    const spec = async (labels: Record<string, string>): Promise<LaunchSpec> => ({
      instanceId: labels[INSTANCE_LABEL]!,
      agentEnv: { HANGAR_INSTANCE_ID: labels[INSTANCE_LABEL]! },
      gpus: [],
      labels,
      offer: await harness.offer(),
      image: "hangar/conformance:latest",
      bootstrapCommand: harness.bootstrapCommand,
      diskGb: 20,
    });
    const labelsFor = (dep: string, instance: string) => ({
      [DEPLOYMENT_LABEL]: dep,
      [INSTANCE_LABEL]: instance,
    });

    it("launches with labels, boots to running, lists by labels and terminates idempotently", async () => {
      const { provider } = harness;
      const mine = deployment();
      const result = await provider.launch(await spec(labelsFor(mine, "inst_a")));
      launched.push(result.providerInstanceId);
      assert.ok(result.providerInstanceId.length > 0);
      assert.ok(result.machineId.length > 0);
      assert.ok(result.pricePerHour >= 0);
      if (provider.capabilities.launchesOffers) {
        assert.ok(result.pricePerHour > 0, "a cloud reports the price it bills");
      }
      const first = await provider.describe(result.providerInstanceId);
      assert.ok(["booting", "running"].includes(first), `just launched: ${first}`);
      await eventually(provider, result.providerInstanceId, ["running"]);
      if (provider.capabilities.reportsSpend) {
        // The account holds only this suite's instance: its bill is the price reported at launch.
        assert.equal(await provider.spendPerHour!(), result.pricePerHour);
      }

      const listed = await provider.list({ [DEPLOYMENT_LABEL]: mine });
      assert.deepEqual(
        listed.map((l) => [l.providerInstanceId, l.labels[INSTANCE_LABEL]]),
        [[result.providerInstanceId, "inst_a"]],
      );
      assert.deepEqual(await provider.list({ [DEPLOYMENT_LABEL]: deployment() }), [], "another deployment's");

      await provider.terminate(result.providerInstanceId);
      await eventually(provider, result.providerInstanceId, ["gone"]);
      assert.deepEqual(await provider.list({ [DEPLOYMENT_LABEL]: mine }), []);
      await provider.terminate(result.providerInstanceId);
    });

    it("treats an instance it does not know as gone (or not its own) and terminating it as done", async () => {
      const unknown = harness.provider.capabilities.launchesOffers ? "999999999" : "elsewhere:1";
      assert.ok(["gone", "unknown"].includes(await harness.provider.describe(unknown)));
      await harness.provider.terminate(unknown);
    });

    it("rides out rate limits and server errors on launch", async (t) => {
      if (!harness.faults) return t.skip("no emulator to inject faults into");
      const mine = deployment();
      harness.faults.push({ kind: "status", status: 429, retryAfterS: 0 }, { kind: "status", status: 503 });
      const result = await harness.provider.launch(await spec(labelsFor(mine, "inst_b")));
      launched.push(result.providerInstanceId);
      await eventually(harness.provider, result.providerInstanceId, ["booting", "running"]);
      await harness.provider.terminate(result.providerInstanceId);
      await eventually(harness.provider, result.providerInstanceId, ["gone"]);
    });

    it("refuses a launch without capacity as retryable, leaving nothing behind", async (t) => {
      if (!harness.refuseNextLaunch) return t.skip("this provider cannot run out of capacity on demand");
      const mine = deployment();
      harness.refuseNextLaunch();
      await assert.rejects(
        harness.provider.launch(await spec(labelsFor(mine, "inst_c"))),
        (error: unknown) => error instanceof ProviderApiError && error.retryable,
      );
      assert.deepEqual(await harness.provider.list({ [DEPLOYMENT_LABEL]: mine }), []);
    });

    it("stops and resumes where the provider can", async (t) => {
      const { provider } = harness;
      if (!provider.capabilities.stopResume) return t.skip("no stop/resume");
      const mine = deployment();
      const result = await provider.launch(await spec(labelsFor(mine, "inst_d")));
      launched.push(result.providerInstanceId);
      await eventually(provider, result.providerInstanceId, ["running"]);
      await provider.stop!(result.providerInstanceId);
      await eventually(provider, result.providerInstanceId, ["stopped"]);
      await provider.resume!(result.providerInstanceId);
      await eventually(provider, result.providerInstanceId, ["booting", "running"]);
      await provider.terminate(result.providerInstanceId);
      await eventually(provider, result.providerInstanceId, ["gone"]);
    });
  });
}
