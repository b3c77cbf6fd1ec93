import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { RUNPOD_GRAPHQL_URL, RunPodClient } from "../providers/runpod/runpod-client.ts";

const run = promisify(execFile);

/**
 * How an instance ends itself when the control plane is gone for good or its lifetime is up, so that
 * nothing keeps billing: through its provider when the provider gave it the means, or by powering
 * the machine off when asked to. A local agent's process ending is its instance ending.
 * Returns what it did, for the log.
 */
export type SelfTerminate = () => Promise<string>;

export function selfTerminator(env: NodeJS.ProcessEnv): SelfTerminate {
  const podId = env.RUNPOD_POD_ID;
  const podKey = env.RUNPOD_API_KEY;
  if (podId && podKey) {
    // RunPod gives every pod its id and a pod-scoped key, enough to terminate itself.
    const client = new RunPodClient({
      apiKey: podKey,
      graphqlUrl: env.RUNPOD_GRAPHQL_URL || RUNPOD_GRAPHQL_URL,
    });
    return async () => {
      await client.terminatePod(podId);
      return `terminated RunPod pod ${podId}`;
    };
  }
  if (env.HANGAR_AGENT_POWEROFF === "1") {
    return async () => {
      await run("poweroff", [], { timeout: 30_000 });
      return "powered the machine off";
    };
  }
  return async () => "exited (the agent's process is the instance)";
}
