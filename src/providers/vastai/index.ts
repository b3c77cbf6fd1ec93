import { VAST_API_URL, VastClient } from "./vast-client.ts";
import { VastProvider } from "./vast-provider.ts";

export { VastClient, VastProvider };

/** Vast.ai when VAST_API_KEY is set; VAST_API_URL points it elsewhere (an emulator, a proxy). */
export function vastFromEnv(
  env: NodeJS.ProcessEnv,
  options: { maxInstances?: number } = {},
): VastProvider | null {
  if (!env.VAST_API_KEY) return null;
  return new VastProvider(
    new VastClient({ apiKey: env.VAST_API_KEY, apiUrl: env.VAST_API_URL || VAST_API_URL }),
    options,
  );
}
