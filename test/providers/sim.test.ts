import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { ProviderApiError } from "../../src/providers/http.ts";
import {
  DEFAULT_SIM_MARKET,
  drawApiFault,
  drawBootFate,
  drawNoCapacity,
  drawPreemptionAfterS,
  InstanceHost,
  type SimMarket,
  SimProvider,
  seededRandom,
} from "../../src/providers/sim/index.ts";
import { runComputeConformance } from "./compute-conformance.ts";

/** Boots in ~50 ms real time, never fails by chance: the conformance suite's cases stay deterministic. */
const QUICK: SimMarket = {
  offers: DEFAULT_SIM_MARKET.offers,
  behaviour: {
    ...DEFAULT_SIM_MARKET.behaviour,
    bootFailureRate: 0,
    stuckRate: 0,
    bootSigma: 0.2,
    timeScale: 1200,
  },
};

runComputeConformance("sim", async () => {
  const root = await mkdtemp(join(tmpdir(), "hangar-sim-"));
  // The market finds no capacity for as many launches as the suite asks it to, then has room again.
  let refusals = 0;
  const market: SimMarket = {
    offers: QUICK.offers,
    behaviour: {
      ...QUICK.behaviour,
      get noCapacityRate() {
        if (refusals === 0) return 0;
        refusals--;
        return 1;
      },
    },
  };
  const provider = new SimProvider({ market, host: new InstanceHost(root), random: seededRandom(7) });
  return {
    provider,
    offer: async () => (await provider.offers({ gpu: "RTX4090", spot: false }))[0]!,
    bootstrapCommand: "sleep 600",
    refuseNextLaunch: () => {
      refusals++;
    },
    close: async () => {
      await provider.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

describe("the simulated market's draws", () => {
  const draws = <T>(n: number, draw: () => T) => Array.from({ length: n }, draw);

  it("boot times are long-tailed around the median, and failure and stuck shares match their rates", () => {
    const random = seededRandom(42);
    const fates = draws(20_000, () => drawBootFate(DEFAULT_SIM_MARKET.behaviour, random));
    const share = (outcome: string) => fates.filter((f) => f.outcome === outcome).length / fates.length;
    assert.ok(Math.abs(share("stuck") - 0.03) < 0.005, `stuck ${share("stuck")}`);
    assert.ok(Math.abs(share("failed") - 0.1) < 0.01, `failed ${share("failed")}`);
    const times = fates.flatMap((f) => (f.outcome === "stuck" ? [] : [f.afterS])).sort((a, b) => a - b);
    const at = (q: number) => times[Math.floor(q * (times.length - 1))]!;
    assert.ok(Math.abs(at(0.5) - 60) < 3, `median ${at(0.5)}`);
    // Log-normal with sigma 0.9: p90 = median × e^(1.2816 × 0.9) ≈ 3.17 × median.
    assert.ok(Math.abs(at(0.9) / at(0.5) - 3.17) < 0.2, `p90/p50 ${at(0.9) / at(0.5)}`);
  });

  it("preemptions follow their hourly rate, and API faults theirs", () => {
    const random = seededRandom(9);
    const afters = draws(20_000, () => drawPreemptionAfterS(0.5, random));
    const mean = afters.reduce((sum, s) => sum + s, 0) / afters.length;
    assert.ok(Math.abs(mean - 7_200) < 200, `mean ${mean} s for 0.5/h`);
    assert.equal(drawPreemptionAfterS(0, random), Number.POSITIVE_INFINITY);
    const faults = draws(20_000, () => drawApiFault(0.2, random));
    const rate = faults.filter((f) => f !== null).length / faults.length;
    assert.ok(Math.abs(rate - 0.2) < 0.01, `fault rate ${rate}`);
    assert.deepEqual(
      new Set(faults.filter((f) => f !== null)),
      new Set(["server_error", "rate_limited", "timeout"]),
    );
  });

  it("a launch whose answer times out still made the instance, which only its labels reveal", async () => {
    const market: SimMarket = { ...QUICK, behaviour: { ...QUICK.behaviour, apiFaultRate: 1 } };
    // With every call failing, only launch's timeout goes through to the market: the rest fail first.
    let draw = 0;
    const random = () => [0, 0.9][draw++ % 2]!; // a fault, of the third kind (timeout)
    const provider = new SimProvider({ market, random });
    await assert.rejects(
      provider.launch({
        instanceId: "inst_lost",
        agentEnv: {},
        gpus: [],
        labels: { hangar_deployment: "d", hangar_instance: "inst_lost" },
        offer: (await new SimProvider({ market: QUICK }).offers({}))[0]!,
        image: "",
        bootstrapCommand: "",
        diskGb: 10,
      }),
      /timed out/,
    );
    assert.deepEqual(
      provider.liveInstances().map((i) => i.labels.hangar_instance),
      ["inst_lost"],
    );
    await provider.close();
  });

  it("a launch refused for want of capacity makes nothing, and a rate of 0 draws nothing", async () => {
    const random = seededRandom(11);
    const refusals = draws(20_000, () => drawNoCapacity(0.05, random)).filter(Boolean).length / 20_000;
    assert.ok(Math.abs(refusals - 0.05) < 0.005, `no-capacity rate ${refusals}`);
    let drawn = 0;
    assert.equal(
      drawNoCapacity(0, () => drawn++),
      false,
    );
    assert.equal(drawn, 0);

    const market: SimMarket = { ...QUICK, behaviour: { ...QUICK.behaviour, noCapacityRate: 1 } };
    const provider = new SimProvider({ market, random: seededRandom(3) });
    const launch = provider.launch({
      instanceId: "inst_full",
      agentEnv: {},
      gpus: [],
      labels: { hangar_deployment: "d", hangar_instance: "inst_full" },
      offer: (await provider.offers({}))[0]!,
      image: "",
      bootstrapCommand: "",
      diskGb: 10,
    });
    await assert.rejects(launch, (error: ProviderApiError) => {
      assert.match(error.message, /no capacity/);
      assert.deepEqual([error.status, error.retryable], [409, true]);
      return true;
    });
    assert.deepEqual(provider.liveInstances(), []);
    assert.deepEqual(provider.instances(), []);
    assert.deepEqual(provider.injectedFaults(), { launch: { no_capacity: 1 } });
    await provider.close();
  });
});
