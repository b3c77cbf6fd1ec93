import { RUNPOD_GRAPHQL_URL, RunPodClient } from "./runpod-client.ts";
import { RunPodProvider } from "./runpod-provider.ts";
import { RunPodRestClient, restUrlBeside } from "./runpod-rest-client.ts";

export { RunPodClient, RunPodProvider, RunPodRestClient };

/**
 * RunPod when RUNPOD_API_KEY is set; RUNPOD_GRAPHQL_URL points it elsewhere (an emulator, a proxy),
 * and RUNPOD_REST_URL its REST v2 API (default: `/v2` beside the GraphQL URL, api.runpod.io/v2).
 */
export function runpodFromEnv(
  env: NodeJS.ProcessEnv,
  options: { maxInstances?: number } = {},
): RunPodProvider | null {
  if (!env.RUNPOD_API_KEY) return null;
  const graphqlUrl = env.RUNPOD_GRAPHQL_URL || RUNPOD_GRAPHQL_URL;
  return new RunPodProvider(
    {
      graphql: new RunPodClient({ apiKey: env.RUNPOD_API_KEY, graphqlUrl }),
      rest: new RunPodRestClient({
        apiKey: env.RUNPOD_API_KEY,
        restUrl: env.RUNPOD_REST_URL || restUrlBeside(graphqlUrl),
      }),
    },
    options,
  );
}
