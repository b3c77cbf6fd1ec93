import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { loadConfig } from "../../src/config.ts";

describe("provisioning settings", () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "hangar-config-"));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));
  const load = (env: Record<string, string>) => loadConfig({ HANGAR_DATA_DIR: dataDir, ...env });

  it("defaults to Coldstart, races of 3, no warm pool, the providers' own boot timeouts", () => {
    const config = load({});
    assert.equal(config.provisioningStrategy, "coldstart");
    assert.equal(config.raceWidth, 3);
    assert.deepEqual(config.warmPools, []);
    assert.deepEqual(config.bootTimeoutS, {});
    assert.equal(config.marketSnapshotS, 900);
  });

  it("reads a strategy, warm pools and per-provider boot timeouts", () => {
    const config = load({
      HANGAR_PROVISIONING_STRATEGY: "race",
      HANGAR_RACE_WIDTH: "4",
      HANGAR_WARM_POOL: "RTX4090:1",
      HANGAR_BOOT_TIMEOUT_S: "runpod:1800, vastai:300",
    });
    assert.equal(config.provisioningStrategy, "race");
    assert.equal(config.raceWidth, 4);
    assert.deepEqual(config.warmPools, [{ type: "RTX4090", min: 1, max: null, idleS: null }]);
    assert.deepEqual(config.bootTimeoutS, { runpod: 1800, vastai: 300 });
  });

  it("refuses values it cannot use, naming the setting and the part", () => {
    assert.throws(
      () => load({ HANGAR_PROVISIONING_STRATEGY: "fastest" }),
      /HANGAR_PROVISIONING_STRATEGY must be one of coldstart, roundrobin, race, not "fastest"/,
    );
    assert.throws(
      () => load({ HANGAR_BOOT_TIMEOUT_S: "runpod=1800" }),
      /HANGAR_BOOT_TIMEOUT_S: "runpod=1800" is not PROVIDER:SECONDS/,
    );
    assert.throws(() => load({ HANGAR_WARM_POOL: "RTX4090" }), /HANGAR_WARM_POOL/);
  });
});
