import { RUNPOD_GRAPHQL_URL, RunPodClient } from "./runpod-client.ts";
import { RunPodProvider } from "./runpod-provider.ts";

export { RunPodClient, RunPodProvider };

/** RunPod when RUNPOD_API_KEY is set; RUNPOD_GRAPHQL_URL points it elsewhere (an emulator, a proxy). */
export function runpodFromEnv(
  env: NodeJS.ProcessEnv,
  options: { maxInstances?: number } = {},
): RunPodProvider | null {
  if (!env.RUNPOD_API_KEY) return null;
  return new RunPodProvider(
    new RunPodClient({
      apiKey: env.RUNPOD_API_KEY,
      graphqlUrl: env.RUNPOD_GRAPHQL_URL || RUNPOD_GRAPHQL_URL,
    }),
    options,
  );
}
