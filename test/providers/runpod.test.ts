import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ProviderApiError } from "../../src/providers/http.ts";
import { RunPodClient, RunPodProvider, RunPodRestClient } from "../../src/providers/runpod/index.ts";
import { type RunPodEmulator, startRunPodEmulator } from "../emulators/runpod.ts";
import { runComputeConformance } from "./compute-conformance.ts";
import { FAST_RETRY, runOfferSourceConformance } from "./offer-conformance.ts";

/** The provider as the server builds it: GraphQL and REST v2 clients on the emulator. */
const providerOn = (emulator: RunPodEmulator) =>
  new RunPodProvider({
    graphql: new RunPodClient({ apiKey: emulator.apiKey, graphqlUrl: emulator.url, retry: FAST_RETRY }),
    rest: new RunPodRestClient({ apiKey: emulator.apiKey, restUrl: emulator.restUrl, retry: FAST_RETRY }),
  });

runOfferSourceConformance("runpod (emulator)", async () => {
  const emulator = await startRunPodEmulator();
  return { source: providerOn(emulator), close: () => emulator.close() };
});

describe("RunPod client and offers against the emulator", () => {
  let emulator: RunPodEmulator;
  let client: RunPodClient;
  before(async () => {
    emulator = await startRunPodEmulator();
    client = new RunPodClient({ apiKey: emulator.apiKey, graphqlUrl: emulator.url, retry: FAST_RETRY });
  });
  after(() => emulator.close());

  it("offers community and secure, on-demand and spot, priced for the whole machine; none out of stock", async () => {
    const offers = await providerOn(emulator).offers({ minGpus: 2 });
    assert.deepEqual(
      offers.map((o) => [o.id, o.gpu, o.gpuCount, o.spot, o.pricePerHour]).sort(),
      [
        ["NVIDIA GeForce RTX 4090:COMMUNITY", "RTX4090", 2, false, 0.68],
        ["NVIDIA GeForce RTX 4090:COMMUNITY:SPOT", "RTX4090", 2, true, 0.4],
        ["NVIDIA GeForce RTX 4090:SECURE", "RTX4090", 2, false, 1.38],
        ["NVIDIA GeForce RTX 4090:SECURE:SPOT", "RTX4090", 2, true, 1],
        ["NVIDIA H100 80GB HBM3:SECURE", "H100", 2, false, 5.38],
        ["NVIDIA H100 80GB HBM3:SECURE:SPOT", "H100", 2, true, 3.5],
      ].sort(),
      "the RTX 3090 has no stock, so it is not offered",
    );
    const rtx = offers.find((o) => o.id === "NVIDIA GeForce RTX 4090:COMMUNITY");
    assert.deepEqual([rtx?.vcpus, rtx?.memoryGb], [16, 82], "lowestPrice for the count asked");
  });

  it("does not offer a count beyond the type's maximum", async () => {
    const offers = await providerOn(emulator).offers({ minGpus: 16 });
    assert.deepEqual(offers, []);
  });

  it("turns an error delivered with HTTP 200 into an error carrying RunPod's message", async () => {
    emulator.failNextWith(
      "There are no longer any instances available with the requested specifications. Please refresh and try again.",
    );
    const error = await client.gpuTypes(1).catch((err: unknown) => err);
    assert.ok(error instanceof ProviderApiError);
    assert.equal(error.status, 200);
    assert.equal(error.retryable, true, "no capacity may clear later");
    assert.match(error.message, /^runpod: There are no longer any instances available/);
  });

  it("retries a 429 after its Retry-After, and a 5xx, then answers", async () => {
    emulator.faults.push({ kind: "status", status: 429, retryAfterS: 1 }, { kind: "status", status: 502 });
    const started = Date.now();
    const types = await client.gpuTypes(1);
    assert.ok(types.length > 0);
    assert.ok(Date.now() - started >= 1_000, "waited for Retry-After");
  });

  it("gives up after its attempts with a retryable error naming the status", async () => {
    emulator.faults.push(...Array.from({ length: 3 }, () => ({ kind: "status" as const, status: 503 })));
    await assert.rejects(client.gpuTypes(1), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 503);
      assert.equal(err.retryable, true);
      return true;
    });
  });

  it("refuses a wrong key with 401 on account queries, while the catalog needs none", async () => {
    const wrong = new RunPodClient({ apiKey: "nope", graphqlUrl: emulator.url, retry: FAST_RETRY });
    await assert.rejects(wrong.query("query { myself { id clientBalance } }"), (err: unknown) => {
      assert.ok(err instanceof ProviderApiError);
      assert.equal(err.status, 401);
      assert.equal(err.retryable, false);
      assert.match(err.message, /refused \(RUNPOD_API_KEY\)/, "names the setting to fix");
      assert.doesNotMatch(err.message, /nope/, "the key is never echoed");
      return true;
    });
    const me = await client.query<{ myself: { clientBalance: number } }>(
      "query { myself { clientBalance } }",
    );
    assert.equal(me.myself.clientBalance, 435.85);
  });

  it("reports invalid variables as the 400 RunPod answers", async () => {
    await assert.rejects(
      client.query("query T($n: Int!) { gpuTypes { lowestPrice(input: {gpuCount: $n}) { stockStatus } } }", {
        n: "two",
      }),
      (err: unknown) => err instanceof ProviderApiError && err.status === 400 && !err.retryable,
    );
  });
});

runComputeConformance("runpod (emulator)", async () => {
  const emulator = await startRunPodEmulator();
  const provider = providerOn(emulator);
  return {
    provider,
    offer: async () =>
      (await provider.offers({ gpu: "RTX4090" })).find((o) => o.id === "NVIDIA GeForce RTX 4090:COMMUNITY")!,
    bootstrapCommand: "sleep 600",
    faults: emulator.faults,
    refuseNextLaunch: () => emulator.refuseNextLaunch(),
    close: () => emulator.close(),
  };
});

describe("RunPod pods against the emulator", () => {
  let emulator: RunPodEmulator;
  let provider: RunPodProvider;
  before(async () => {
    emulator = await startRunPodEmulator();
    provider = providerOn(emulator);
  });
  after(() => emulator.close());

  const offer = async (id: string) => (await provider.offers({ gpu: "RTX4090" })).find((o) => o.id === id)!;
  const spec = async (instanceId: string, offerId: string, command: string) => ({
    instanceId,
    agentEnv: { HANGAR_INSTANCE_ID: instanceId, HANGAR_NOTE: 'it\'s a "test" $HOME' },
    gpus: [],
    labels: { hangar_deployment: "dep-pods", hangar_instance: instanceId },
    offer: await offer(offerId),
    image: "nikolaik/python-nodejs:python3.12-nodejs24",
    bootstrapCommand: command,
    diskGb: 30,
  });
  const until = async (check: () => boolean, what: string) => {
    for (let i = 0; i < 100 && !check(); i++) await sleep(50);
    assert.ok(check(), what);
  };

  it("deploys the offer's cloud and GPU, runs the bootstrap command with the env and RunPod's own, and reports the billed price", async () => {
    const launched = await provider.launch(
      await spec(
        "inst_env",
        "NVIDIA GeForce RTX 4090:SECURE",
        'printf "%s|%s|%s" "$HANGAR_NOTE" "$RUNPOD_POD_ID" "$HANGAR_LABEL_HANGAR_INSTANCE" > seen; sleep 600',
      ),
    );
    const pod = emulator.pods.get(launched.providerInstanceId)!;
    assert.deepEqual(
      [pod.gpuTypeId, pod.gpuCount, pod.podType, pod.imageName],
      ["NVIDIA GeForce RTX 4090", 1, "RESERVED", "nikolaik/python-nodejs:python3.12-nodejs24"],
    );
    assert.equal(launched.pricePerHour, pod.costPerHr, "the pod's costPerHr, not the quote");
    assert.notEqual(launched.pricePerHour, (await offer("NVIDIA GeForce RTX 4090:SECURE")).pricePerHour);
    const seen = join(emulator.host.pathOf(launched.providerInstanceId), "seen");
    await until(() => existsSync(seen), "the bootstrap command ran");
    assert.equal(
      readFileSync(seen, "utf8"),
      `it's a "test" $HOME|${launched.providerInstanceId}|inst_env`,
      "quotes and $ survive dockerArgs; RunPod sets RUNPOD_POD_ID; labels travel in the env",
    );
    await provider.terminate(launched.providerInstanceId);
    assert.equal(await provider.describe(launched.providerInstanceId), "gone");
  });

  it("is booting while the container is not up (runtime null), and a spot pod RunPod takes back is preempted", async () => {
    emulator.stickNextBoot();
    const stuck = await provider.launch(
      await spec("inst_stuck", "NVIDIA GeForce RTX 4090:COMMUNITY", "sleep 600"),
    );
    await sleep(400);
    assert.equal(await provider.describe(stuck.providerInstanceId), "booting", "stuck provisioning");
    await provider.terminate(stuck.providerInstanceId);

    const spot = await provider.launch(
      await spec("inst_spot", "NVIDIA GeForce RTX 4090:COMMUNITY:SPOT", "sleep 600"),
    );
    assert.equal(emulator.pods.get(spot.providerInstanceId)?.podType, "INTERRUPTABLE");
    await until(() => emulator.host.isRunning(spot.providerInstanceId), "the spot pod boots");
    await emulator.preempt(spot.providerInstanceId);
    assert.equal(await provider.describe(spot.providerInstanceId), "preempted");
    await provider.terminate(spot.providerInstanceId);
  });

  it("sees a container that cannot start as failed at once (REST v2 ERROR), and terminates through REST idempotently", async () => {
    emulator.failNextBoot();
    const broken = await provider.launch(
      await spec("inst_broken", "NVIDIA GeForce RTX 4090:COMMUNITY", "sleep 600"),
    );
    assert.equal(await provider.describe(broken.providerInstanceId), "failed");
    await provider.terminate(broken.providerInstanceId);
    await provider.terminate(broken.providerInstanceId);
    assert.equal(await provider.describe(broken.providerInstanceId), "gone");
    assert.ok(emulator.requests.includes(`DELETE /v2/pods/${broken.providerInstanceId}`));
  });

  it("answers REST v2's problem details and rate limits as RunPod does", async () => {
    const rest = new RunPodRestClient({
      apiKey: emulator.apiKey,
      restUrl: emulator.restUrl,
      retry: FAST_RETRY,
    });
    assert.equal(await rest.pod("no_such_pod"), null, "404 problem+json: gone");
    emulator.faults.push({
      kind: "status",
      status: 429,
      retryAfterS: 0,
      body: '{"title":"Too Many Requests","status":429,"detail":"slow down"}',
    });
    assert.deepEqual(await rest.pods(), []);
    const response = await fetch(`${emulator.restUrl}/pods/no_such_pod`, {
      headers: { authorization: `Bearer ${emulator.apiKey}` },
    });
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    assert.deepEqual(await response.json(), { title: "Not Found", status: 404, detail: "pod not found" });
    const stranger = new RunPodRestClient({ apiKey: "nope", restUrl: emulator.restUrl, retry: FAST_RETRY });
    await assert.rejects(
      stranger.pods(),
      (error: unknown) => error instanceof ProviderApiError && error.status === 401 && !error.retryable,
    );
  });

  it("turns no capacity into a retryable refusal", async () => {
    emulator.refuseNextLaunch();
    await assert.rejects(
      provider.launch(await spec("inst_full", "NVIDIA GeForce RTX 4090:COMMUNITY", "sleep 600")),
      (error: unknown) =>
        error instanceof ProviderApiError && error.retryable && /no longer any instances/.test(error.message),
    );
  });
});
