import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Offer } from "../../src/domain/offers.ts";
import { DEPLOYMENT_LABEL, INSTANCE_LABEL } from "../../src/domain/reconcile.ts";
import { ProviderApiError } from "../../src/providers/http.ts";
import type { LaunchSpec, ProviderInstanceStatus } from "../../src/providers/provider.ts";
import { VastClient, VastProvider } from "../../src/providers/vastai/index.ts";
import { startVastEmulator, type VastEmulator } from "../emulators/vastai.ts";
import { runComputeConformance } from "./compute-conformance.ts";
import { FAST_RETRY, runOfferSourceConformance } from "./offer-conformance.ts";

/** Stands in for the agent; an unusual duration, so a leftover process is easy to find (`pgrep -f`). */
const KEEP_UP = "sleep 607";

/** The real client and provider against an emulator, with the tests' quick retries. */
const vastProviderOf = (emulator: VastEmulator) =>
  new VastProvider(new VastClient({ apiKey: emulator.apiKey, apiUrl: emulator.url, retry: FAST_RETRY }));

runOfferSourceConformance("vastai (emulator)", async () => {
  const emulator = await startVastEmulator();
  return { source: vastProviderOf(emulator), close: () => emulator.close() };
});

describe("Vast.ai client and offers against the emulator", () => {
  let emulator: VastEmulator;
  let provider: VastProvider;
  before(async () => {
    emulator = await startVastEmulator();
    provider = vastProviderOf(emulator);
  });
  after(() => emulator.close());

  it("asks Vast to filter and order, and maps its offers (MB to GB, bids as spot)", async () => {
    const offers = await provider.offers({ gpu: "NVIDIA GeForce RTX 4090", minGpuMemoryGb: 20 });
    const search = emulator.searches.at(-1)!;
    assert.deepEqual(search.gpu_name, { in: ["RTX 4090"] });
    assert.deepEqual(search.gpu_ram, { gte: 20 * 1024 });
    assert.deepEqual(search.rented, { eq: false });
    assert.deepEqual(
      offers.map((o) => [o.id, o.gpu, o.gpuCount, o.gpuMemoryGb, o.spot, o.pricePerHour, o.reliability]),
      [
        ["7001", "RTX4090", 1, 24, false, 0.31, 0.995],
        ["7002", "RTX4090", 2, 24, false, 0.58, 0.97],
        ["7001", "RTX4090", 1, 24, true, 0.18, 0.995],
        ["7002", "RTX4090", 2, 24, true, 0.33, 0.97],
      ],
      "the rented machine 7006 is not offered",
    );
    assert.equal(offers[0]?.region, "Norway, NO");
    assert.equal(offers[0]?.memoryGb, 63);
  });

  it("names an A100 by its memory", async () => {
    const [a100] = await provider.offers({ gpu: "A100", spot: false });
    assert.equal(a100?.gpu, "A100-40GB");
  });

  it("retries a 429 and answers", async () => {
    emulator.faults.push({ kind: "status", status: 429 });
    const offers = await provider.offers({ spot: false });
    assert.ok(offers.length > 0);
  });

  it("refuses a wrong key with a non-retryable 401 that does not echo the key", async () => {
    const wrong = new VastProvider(
      new VastClient({ apiKey: "secret-nope", apiUrl: emulator.url, retry: FAST_RETRY }),
    );
    await assert.rejects(wrong.offers({}), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 401);
      assert.equal(err.retryable, false);
      assert.match(err.message, /refused \(VAST_API_KEY\)/, "names the setting to fix");
      assert.doesNotMatch(err.message, /secret-nope/);
      return true;
    });
  });

  it("reports Vast's own error message for a request it refuses", async () => {
    const client = new VastClient({ apiKey: emulator.apiKey, apiUrl: emulator.url, retry: FAST_RETRY });
    await assert.rejects(client.searchOffers({ num_gpus: { about: 2 } }), /Unknown operator about/);
  });
});

/** The cheapest live RTX 4090 offer, on demand or spot. */
async function rtx4090(provider: VastProvider, spot: boolean): Promise<Offer> {
  const [offer] = await provider.offers({ gpu: "RTX4090", spot });
  assert.ok(offer, "the market has an RTX 4090 to rent");
  return offer;
}

runComputeConformance("vastai (emulator)", async () => {
  const emulator = await startVastEmulator();
  const provider = vastProviderOf(emulator);
  return {
    provider,
    offer: () => rtx4090(provider, false),
    bootstrapCommand: KEEP_UP,
    faults: emulator.faults,
    refuseNextLaunch: () => emulator.refuseNextLaunch(),
    close: () => emulator.close(),
  };
});

describe("Vast.ai instances against the emulator", () => {
  let emulator: VastEmulator;
  let provider: VastProvider;
  before(async () => {
    emulator = await startVastEmulator();
    provider = vastProviderOf(emulator);
  });
  after(() => emulator.close());

  const spec = (offer: Offer, instanceId: string, bootstrapCommand = KEEP_UP): LaunchSpec => ({
    instanceId,
    agentEnv: { HANGAR_INSTANCE_ID: instanceId, HANGAR_URL: "http://control.example:8080" },
    gpus: [],
    labels: { [DEPLOYMENT_LABEL]: "dep-vast", [INSTANCE_LABEL]: instanceId },
    offer,
    image: "hangar/agent:latest",
    bootstrapCommand,
    diskGb: 20,
  });

  async function eventually(id: string, wanted: ProviderInstanceStatus): Promise<void> {
    const deadline = Date.now() + 10_000;
    let status = await provider.describe(id);
    while (status !== wanted && Date.now() < deadline) {
      await sleep(50);
      status = await provider.describe(id);
    }
    assert.equal(status, wanted, `instance ${id}`);
  }

  it("rents the ask on demand with the image, env, labels and the bootstrap command as the container's", async () => {
    const offer = await rtx4090(provider, false);
    const launched = await provider.launch(spec(offer, "inst_body"));
    try {
      assert.deepEqual(emulator.creates.at(-1), {
        client_id: "me",
        image: "hangar/agent:latest",
        disk: 20,
        label: "hangar_deployment=dep-vast;hangar_instance=inst_body",
        env: { HANGAR_INSTANCE_ID: "inst_body", HANGAR_URL: "http://control.example:8080" },
        onstart: "sh",
        runtype: "args",
        args: ["-c", KEEP_UP],
        price: null,
      });
      const instance = emulator.instances.get(Number(launched.providerInstanceId))!;
      assert.equal(launched.machineId, String(instance.machine_id));
      assert.equal(launched.pricePerHour, instance.dph_total, "the price Vast bills for the instance");
      assert.notEqual(launched.pricePerHour, offer.pricePerHour, "not the offer's quote");
      assert.equal(instance.is_bid, false);
    } finally {
      await provider.terminate(launched.providerInstanceId);
    }
  });

  it("bids the offer's price for a spot offer", async () => {
    const offer = await rtx4090(provider, true);
    const launched = await provider.launch(spec(offer, "inst_bid"));
    try {
      assert.equal(emulator.creates.at(-1)?.price, offer.pricePerHour);
      assert.equal(emulator.instances.get(Number(launched.providerInstanceId))?.is_bid, true);
    } finally {
      await provider.terminate(launched.providerInstanceId);
    }
  });

  it("destroys the stopped instance a too-low bid leaves behind, and refuses the launch", async () => {
    const offer = await rtx4090(provider, true);
    await assert.rejects(provider.launch(spec({ ...offer, pricePerHour: 0.01 }, "inst_lowball")), (error) => {
      assert.ok(error instanceof ProviderApiError);
      assert.equal(error.retryable, true, "a fresh quote may rent");
      assert.match(error.message, /below the minimum bid/);
      return true;
    });
    assert.equal(emulator.instances.size, 0, "nothing left billed");
    assert.equal(emulator.market.find((ask) => String(ask.id) === offer.id)?.rented, false);
    assert.deepEqual(await provider.list({ [INSTANCE_LABEL]: "inst_lowball" }), []);
  });

  it("runs the bootstrap command in the container with the agent's environment and Vast's own", async () => {
    const offer = await rtx4090(provider, false);
    const launched = await provider.launch(
      spec(offer, "inst_marker", `echo "$HANGAR_INSTANCE_ID $CONTAINER_ID" > marker; ${KEEP_UP}`),
    );
    const id = launched.providerInstanceId;
    try {
      await eventually(id, "running");
      const marker = join(emulator.host.pathOf(id), "marker");
      let written = "";
      for (let tries = 0; tries < 100 && !written.endsWith("\n"); tries++) {
        written = await readFile(marker, "utf8").catch(() => "");
        if (!written.endsWith("\n")) await sleep(50);
      }
      assert.equal(written, `inst_marker ${id}\n`);
      assert.ok(emulator.host.isRunning(id));
    } finally {
      await provider.terminate(id);
    }
    assert.equal(emulator.host.isRunning(id), false, "destroying the instance ends its processes");
  });

  it("tells a preempted bid, a stop by request and a failed boot apart", async () => {
    const bid = await provider.launch(spec(await rtx4090(provider, true), "inst_outbid"));
    const onDemand = await provider.launch(spec(await rtx4090(provider, false), "inst_stopped"));
    try {
      await eventually(bid.providerInstanceId, "running");
      await emulator.preempt(bid.providerInstanceId);
      assert.equal(await provider.describe(bid.providerInstanceId), "preempted");
      assert.equal(emulator.host.isRunning(bid.providerInstanceId), false);

      await eventually(onDemand.providerInstanceId, "running");
      await provider.stop(onDemand.providerInstanceId);
      assert.equal(await provider.describe(onDemand.providerInstanceId), "stopped");
      const restarted = vastProviderOf(emulator);
      assert.equal(
        await restarted.describe(onDemand.providerInstanceId),
        "stopped",
        "an on-demand instance is never outbid, whoever stopped it",
      );
    } finally {
      await provider.terminate(bid.providerInstanceId);
      await provider.terminate(onDemand.providerInstanceId);
    }

    emulator.failNextBoot();
    const broken = await provider.launch(spec(await rtx4090(provider, false), "inst_broken"));
    try {
      await eventually(broken.providerInstanceId, "failed");
    } finally {
      await provider.terminate(broken.providerInstanceId);
    }
  });

  it("reads a start Vast holds back as preempted, and one it has planned as booting", async () => {
    const launched = await provider.launch(spec(await rtx4090(provider, false), "inst_held"));
    const id = launched.providerInstanceId;
    try {
      await eventually(id, "running");
      await provider.stop(id);
      const instance = emulator.instances.get(Number(id))!;
      Object.assign(instance, { intended_status: "running", cur_state: "stopped", next_state: "stopped" });
      assert.equal(await provider.describe(id), "preempted");
      Object.assign(instance, { next_state: "running" });
      assert.equal(await provider.describe(id), "booting");
    } finally {
      await provider.terminate(id);
    }
  });

  it("refuses an ask someone else holds as retryable no capacity", async () => {
    const taken = emulator.market.find((ask) => ask.rented)!;
    const offer = { ...(await rtx4090(provider, false)), id: String(taken.id) };
    await assert.rejects(provider.launch(spec(offer, "inst_taken")), (error) => {
      assert.ok(error instanceof ProviderApiError);
      assert.equal(error.retryable, true);
      assert.match(error.message, /not available/);
      return true;
    });
  });

  it("treats terminating an instance that is gone as done", async () => {
    const launched = await provider.launch(spec(await rtx4090(provider, false), "inst_twice"));
    await provider.terminate(launched.providerInstanceId);
    assert.equal(await provider.describe(launched.providerInstanceId), "gone");
    await provider.terminate(launched.providerInstanceId);
  });

  it("gives the container a key that can end its own instance and no other", async () => {
    const own = await provider.launch(
      spec(await rtx4090(provider, false), "inst_own_key", `echo "$CONTAINER_API_KEY" > key; ${KEEP_UP}`),
    );
    const other = await provider.launch(spec(await rtx4090(provider, false), "inst_other"));
    try {
      await eventually(own.providerInstanceId, "running");
      const keyFile = join(emulator.host.pathOf(own.providerInstanceId), "key");
      let containerKey = "";
      for (let tries = 0; tries < 100 && !containerKey; tries++) {
        containerKey = (await readFile(keyFile, "utf8").catch(() => "")).trim();
        if (!containerKey) await sleep(50);
      }
      const fromInside = new VastClient({ apiKey: containerKey, apiUrl: emulator.url, retry: FAST_RETRY });
      await assert.rejects(fromInside.showInstance(other.providerInstanceId), { status: 401 });
      await assert.rejects(fromInside.listInstances(), { status: 401 });
      assert.equal((await fromInside.showInstance(own.providerInstanceId))?.actual_status, "running");
      await fromInside.destroyInstance(own.providerInstanceId);
      assert.equal(await provider.describe(own.providerInstanceId), "gone");
    } finally {
      await provider.terminate(own.providerInstanceId);
      await provider.terminate(other.providerInstanceId);
    }
  });
});
