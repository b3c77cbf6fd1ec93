import { readFileSync } from "node:fs";
import { join } from "node:path";
import { InstanceHost } from "./instance-host.ts";
import { DEFAULT_SIM_MARKET, type SimMarket } from "./sim-market.ts";
import { type SimInstanceRecord, SimProvider } from "./sim-provider.ts";

export * from "./sim-market.ts";
export { InstanceHost, type SimInstanceRecord, SimProvider };

/**
 * The simulated market when HANGAR_SIM is set: `1` for the default market, or the path of a JSON
 * file with `offers` and/or `behaviour` (merged over the defaults). HANGAR_SIM_TIME_SCALE speeds its
 * clock up (60: a one-minute boot takes a second). Its instances run under `<dataDir>/sim`.
 */
export function simFromEnv(
  env: NodeJS.ProcessEnv,
  options: { maxInstances?: number; dataDir: string },
): SimProvider | null {
  if (!env.HANGAR_SIM) return null;
  const given =
    env.HANGAR_SIM === "1"
      ? {}
      : (JSON.parse(readFileSync(env.HANGAR_SIM, "utf8")) as Partial<{
          offers: SimMarket["offers"];
          behaviour: Partial<SimMarket["behaviour"]>;
        }>);
  const market: SimMarket = {
    offers: given.offers ?? DEFAULT_SIM_MARKET.offers,
    behaviour: { ...DEFAULT_SIM_MARKET.behaviour, ...given.behaviour },
  };
  if (env.HANGAR_SIM_TIME_SCALE) market.behaviour.timeScale = Number(env.HANGAR_SIM_TIME_SCALE);
  if (!(market.behaviour.timeScale > 0)) throw new Error("HANGAR_SIM_TIME_SCALE must be a positive number");
  return new SimProvider({
    market,
    host: new InstanceHost(join(options.dataDir, "sim")),
    ...(options.maxInstances !== undefined ? { maxInstances: options.maxInstances } : {}),
  });
}
