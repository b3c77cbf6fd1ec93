import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Offer } from "../../src/domain/offers.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL } from "../../src/domain/reconcile.ts";
import { ProviderApiError } from "../../src/providers/http.ts";
import type { LaunchSpec, ProviderInstanceStatus } from "../../src/providers/provider.ts";
import { TensorDockClient, TensorDockProvider } from "../../src/providers/tensordock/index.ts";
import { bootScript, instanceListOf } from "../../src/providers/tensordock/tensordock-client.ts";
import {
  gpuOfName,
  labelsOfName,
  nameWithLabels,
  parseOfferId,
} from "../../src/providers/tensordock/tensordock-provider.ts";
import {
  startTensorDockEmulator,
  TENSORDOCK_RAM_GB_HOURLY,
  TENSORDOCK_STORAGE_GB_HOURLY,
  TENSORDOCK_VCPU_HOURLY,
  type TensorDockEmulator,
} from "../emulators/tensordock.ts";
import { runComputeConformance } from "./compute-conformance.ts";
import { FAST_RETRY, runOfferSourceConformance } from "./offer-conformance.ts";

const clientOf = (emulator: TensorDockEmulator, token = emulator.token) =>
  new TensorDockClient({ token, apiUrl: emulator.url, retry: FAST_RETRY });

/** A distinctive sleep, so that a VM's leftover processes are easy to find with pgrep. */
const IDLE_VM = "exec sleep 631";

runOfferSourceConformance("tensordock (emulator)", async () => {
  const emulator = await startTensorDockEmulator();
  return { source: new TensorDockProvider(clientOf(emulator)), close: () => emulator.close() };
});

runComputeConformance("tensordock (emulator)", async () => {
  const emulator = await startTensorDockEmulator();
  const provider = new TensorDockProvider(clientOf(emulator));
  return {
    provider,
    offer: async () => (await provider.offers({ gpu: "RTX4090" }))[0] ?? null,
    bootstrapCommand: IDLE_VM,
    faults: emulator.faults,
    refuseNextLaunch: () => emulator.refuseNextLaunch(),
    close: () => emulator.close(),
  };
});

describe("TensorDock client and offers against the emulator", () => {
  let emulator: TensorDockEmulator;
  let provider: TensorDockProvider;
  before(async () => {
    emulator = await startTensorDockEmulator();
    provider = new TensorDockProvider(clientOf(emulator));
  });
  after(() => emulator.close());

  it("reads the GPU model and memory from TensorDock's names", () => {
    assert.deepEqual(gpuOfName("h100-sxm5-80gb"), { gpu: "H100", memoryGb: 80 });
    assert.deepEqual(gpuOfName("geforcertx4090-pcie-24gb"), { gpu: "RTX4090", memoryGb: 24 });
    assert.deepEqual(gpuOfName("a100-pcie-80gb"), { gpu: "A100-80GB", memoryGb: 80 });
    assert.deepEqual(gpuOfName("rtxa6000-pcie-48gb"), { gpu: "rtxa6000-pcie-48gb", memoryGb: 48 });
  });

  it("offers each location's GPUs on demand, priced for the count asked, up to each GPU's maximum", async () => {
    const offers = await provider.offers({ minGpus: 4 });
    assert.deepEqual(
      offers.map((o) => [o.id, o.gpu, o.gpuCount, o.pricePerHour, o.region, o.vcpus]),
      [
        ["loc-us-chicago-1:h100-sxm5-80gb", "H100", 4, 8.8, "Chicago, United States", 128],
        ["loc-us-chicago-1:geforcertx4090-pcie-24gb", "RTX4090", 4, 1.4, "Chicago, United States", 32],
      ],
      "Frankfurt's L40s go up to 2",
    );
    assert.deepEqual(await provider.offers({ spot: true }), [], "TensorDock sells no spot");
  });

  it("retries a 429 and refuses a wrong token without echoing it", async () => {
    emulator.faults.push({ kind: "status", status: 429, retryAfterS: 0 });
    assert.equal((await provider.offers({})).length, 3);
    const wrong = new TensorDockProvider(clientOf(emulator, "td-secret-nope"));
    await assert.rejects(wrong.offers({}), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 401);
      assert.match(err.message, /refused \(TENSORDOCK_API_TOKEN\)/, "names the setting to fix");
      assert.doesNotMatch(err.message, /td-secret-nope/);
      return true;
    });
  });
});

describe("TensorDock encodings", () => {
  it("carries labels in a VM's name and reads them back; other names are not Hangar's", () => {
    const labels = { [DEPLOYMENT_LABEL]: "prod eu=1", [INSTANCE_LABEL]: "inst_a", "odd key%": "x y" };
    const name = nameWithLabels(labels);
    assert.equal(name, "hangar hangar_deployment=prod%20eu%3D1 hangar_instance=inst_a odd%20key%25=x%20y");
    assert.deepEqual(labelsOfName(name), labels);
    assert.equal(labelsOfName("my-own-vm"), null);
    assert.equal(labelsOfName("hangar nolabel"), null);
  });

  it("parses its offer ids back into location and GPU", () => {
    assert.deepEqual(parseOfferId("loc-us-chicago-1:h100-sxm5-80gb"), {
      locationId: "loc-us-chicago-1",
      v0Name: "h100-sxm5-80gb",
    });
    assert.throws(() => parseOfferId("h100-sxm5-80gb"), /Not a TensorDock offer id/);
  });

  it("exports the environment in the boot script, single-quoted, and refuses names the shell cannot take", () => {
    assert.equal(bootScript("run", { A: "x'y $z" }), "export A='x'\\''y $z'\nrun");
    assert.throws(() => bootScript("run", { "A-B": "1" }), /Not an environment variable name/);
  });

  it("reads every instance list shape TensorDock's sources show, and refuses any other", () => {
    const vm = {
      type: "virtualmachine",
      id: "vm-1",
      attributes: { name: "n", status: "running", rateHourly: 1 },
    };
    const expected = [{ id: "vm-1", name: "n", status: "running", rateHourly: 1, locationId: null }];
    assert.deepEqual(instanceListOf({ data: [vm] }), expected);
    assert.deepEqual(instanceListOf({ data: { instances: [vm] } }), expected);
    assert.deepEqual(instanceListOf({ data: { attributes: { instances: [vm] } } }), expected);
    assert.deepEqual(
      instanceListOf({
        data: [{ type: "virtualmachine", id: "vm-1", name: "n", status: "running", rate_hourly: 1 }],
      }),
      expected,
      "attributes inline, snake-case rate",
    );
    assert.equal(instanceListOf({ data: { vms: [vm] } }), null, "an unknown shape is no empty list");
    assert.equal(instanceListOf({ data: [{ type: "virtualmachine" }] }), null);
  });
});

describe("TensorDock VMs against the emulator", () => {
  let emulator: TensorDockEmulator;
  let provider: TensorDockProvider;
  let offer: Offer;
  const launched: string[] = [];
  before(async () => {
    emulator = await startTensorDockEmulator();
    provider = new TensorDockProvider(clientOf(emulator));
    const offers = await provider.offers({ gpu: "RTX4090", minGpus: 2 });
    offer = offers.find((o) => o.id === "loc-us-chicago-1:geforcertx4090-pcie-24gb")!;
  });
  after(async () => {
    for (const id of launched) await provider.terminate(id).catch(() => undefined);
    await emulator.close();
  });

  const deployment = () => `td-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const specFor = (overrides: Partial<LaunchSpec> = {}): LaunchSpec => ({
    instanceId: "inst_td",
    agentEnv: { HANGAR_INSTANCE_ID: "inst_td" },
    gpus: [],
    labels: { [DEPLOYMENT_LABEL]: deployment(), [INSTANCE_LABEL]: "inst_td" },
    offer,
    image: "hangar/agent:latest",
    bootstrapCommand: IDLE_VM,
    diskGb: 20,
    ...overrides,
  });
  const launch = async (overrides: Partial<LaunchSpec> = {}) => {
    const result = await provider.launch(specFor(overrides));
    launched.push(result.providerInstanceId);
    return result;
  };
  const eventually = async (id: string, wanted: ProviderInstanceStatus) => {
    for (let tries = 0; tries < 100 && (await provider.describe(id)) !== wanted; tries++) await sleep(100);
    assert.equal(await provider.describe(id), wanted);
  };
  const fileOnVm = async (id: string, file: string): Promise<string> => {
    for (let tries = 0; ; tries++) {
      try {
        return await readFile(join(emulator.host.pathOf(id), file), "utf8");
      } catch (error) {
        if (tries >= 100) throw error;
        await sleep(100);
      }
    }
  };

  it("creates the VM the offer names: location, GPU model and count, sized resources, 100 GB at least, labels in its name", async () => {
    const spec = specFor();
    const result = await launch(spec);
    const body = emulator.createRequests.at(-1) as {
      data: { type: string; attributes: Record<string, unknown> };
    };
    assert.equal(body.data.type, "virtualmachine");
    const { name, image, resources, location_id, useDedicatedIp, ssh_key } = body.data.attributes;
    assert.deepEqual(resources, {
      vcpu_count: 16,
      ram_gb: 64,
      storage_gb: 100,
      gpus: { "geforcertx4090-pcie-24gb": { count: 2 } },
    });
    assert.equal(location_id, "loc-us-chicago-1");
    assert.equal(image, "ubuntu2404");
    assert.equal(useDedicatedIp, false);
    assert.match(String(ssh_key), /^ssh-ed25519 [A-Za-z0-9+/]+=* hangar-no-login$/, "a throwaway key");
    assert.deepEqual(labelsOfName(String(name)), spec.labels);
    assert.equal(result.machineId, "loc-us-chicago-1");

    await launch({ diskGb: 250 });
    const bigger = emulator.createRequests.at(-1) as {
      data: { attributes: { resources: { storage_gb: number } } };
    };
    assert.equal(bigger.data.attributes.resources.storage_gb, 250);
  });

  it("reports the rate TensorDock bills for the created VM, not the quote", async () => {
    const result = await launch();
    const billed =
      2 * 0.35 +
      16 * TENSORDOCK_VCPU_HOURLY +
      64 * TENSORDOCK_RAM_GB_HOURLY +
      100 * TENSORDOCK_STORAGE_GB_HOURLY;
    assert.equal(result.pricePerHour, Math.round(billed * 10_000) / 10_000);
    assert.notEqual(result.pricePerHour, offer.pricePerHour);
  });

  it("hands the agent its environment exactly, through the boot script, with HANGAR_AGENT_POWEROFF=1", async () => {
    const tricky = "a b'c\"$d `e` \\f\nsecond line";
    const result = await launch({
      agentEnv: { HANGAR_INSTANCE_ID: "inst_td", HANGAR_X: tricky },
      bootstrapCommand: `printf '%s' "$HANGAR_X" > x.txt; printf '%s' "$HANGAR_AGENT_POWEROFF" > poweroff.txt; ${IDLE_VM}`,
    });
    assert.equal(await fileOnVm(result.providerInstanceId, "x.txt"), tricky);
    assert.equal(await fileOnVm(result.providerInstanceId, "poweroff.txt"), "1");
    await provider.terminate(result.providerInstanceId);
    await eventually(result.providerInstanceId, "gone");
    for (let tries = 0; tries < 50 && emulator.host.isRunning(result.providerInstanceId); tries++)
      await sleep(100);
    assert.equal(
      emulator.host.isRunning(result.providerInstanceId),
      false,
      "deleting a VM ends its processes",
    );
  });

  it("shows a VM whose agent powered it off as stopped", async () => {
    const result = await launch({ bootstrapCommand: "poweroff" });
    await eventually(result.providerInstanceId, "stopped");
  });

  it("refuses a launch without capacity as retryable and one without balance as final, creating nothing", async () => {
    const labels = { [DEPLOYMENT_LABEL]: deployment(), [INSTANCE_LABEL]: "inst_refused" };
    emulator.refuseNextLaunch();
    await assert.rejects(provider.launch(specFor({ labels })), (error: unknown) => {
      assert.ok(error instanceof ProviderApiError);
      assert.equal(error.retryable, true);
      assert.match(error.message, /no capacity/i);
      return true;
    });
    await assert.rejects(
      provider.launch(specFor({ labels, offer: { ...offer, gpuCount: 5 } })),
      (error: unknown) => error instanceof ProviderApiError && error.retryable,
      "more GPUs than the location has left is no capacity too",
    );
    emulator.setBalance(0.5);
    try {
      await assert.rejects(provider.launch(specFor({ labels })), (error: unknown) => {
        assert.ok(error instanceof ProviderApiError);
        assert.equal(error.retryable, false);
        assert.match(error.message, /balance/i);
        return true;
      });
    } finally {
      emulator.setBalance(100);
    }
    assert.deepEqual(await provider.list({ [DEPLOYMENT_LABEL]: labels[DEPLOYMENT_LABEL] }), []);
  });

  it("refuses an offer that is not TensorDock's", async () => {
    await assert.rejects(
      provider.launch(specFor({ offer: { ...offer, provider: "vastai" } })),
      /its own offers/,
    );
    await assert.rejects(provider.launch(specFor({ offer: null })), /its own offers/);
  });

  it("lists only the VMs Hangar named, by label", async () => {
    const mine = deployment();
    const result = await launch({ labels: { [DEPLOYMENT_LABEL]: mine, [INSTANCE_LABEL]: "inst_listed" } });
    const foreign = await clientOf(emulator).createInstance({
      name: "someone-elses-vm",
      locationId: "loc-de-frankfurt-1",
      gpu: { v0Name: "l40-pcie-48gb", count: 1 },
      vcpus: 4,
      ramGb: 16,
      storageGb: 100,
      sshPublicKey: "ssh-ed25519 AAAA other",
      bootScript: IDLE_VM,
    });
    launched.push(foreign);
    const listed = await provider.list({});
    assert.ok(listed.some((l) => l.providerInstanceId === result.providerInstanceId));
    assert.ok(!listed.some((l) => l.providerInstanceId === foreign), "not named by Hangar");
    assert.deepEqual(await provider.list({ [DEPLOYMENT_LABEL]: mine }), [
      {
        providerInstanceId: result.providerInstanceId,
        labels: { [DEPLOYMENT_LABEL]: mine, [INSTANCE_LABEL]: "inst_listed" },
      },
    ]);
  });

  it("terminates a VM that is already gone as a success, and describes it as gone", async () => {
    const result = await launch();
    await provider.terminate(result.providerInstanceId);
    await provider.terminate(result.providerInstanceId);
    assert.equal(await provider.describe(result.providerInstanceId), "gone");
    await provider.terminate("00000000-0000-4000-8000-000000000000");
  });
});
