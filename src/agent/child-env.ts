import { MODEL_SETTINGS } from "../models/settings.ts";

/**
 * Carried by every model process with the agent's pid. Model processes lead their own process groups
 * (so that the agent can stop each with its helpers), so they outlive an agent killed with SIGKILL;
 * the local provider finds them by this variable and ends them with their agent.
 */
export const AGENT_PID_ENV = "HANGAR_AGENT_PID";

const MODEL_SETTING_NAMES: ReadonlySet<string> = new Set(MODEL_SETTINGS);

/**
 * The environment for processes the agent starts (notebook runners, model executables): the agent's
 * own HANGAR_* settings, its tokens among them, are dropped.
 */
export function childEnv(env: NodeJS.ProcessEnv, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const kept = Object.entries(env).filter(([name]) => !name.startsWith("HANGAR_"));
  return { ...Object.fromEntries(kept), ...extra };
}

/**
 * The environment model runners see and give their processes: no agent secrets, and OpenMP held to
 * each process's share of the cores unless the instance sets OMP_NUM_THREADS itself. Processes run
 * side by side that each start a thread per core (openbabel's MMFF94 in `--gen3d` does) spin
 * against each other: on two cores that made one 3D ligand take 5-20 s instead of 0.1 s.
 */
export function modelEnv(env: NodeJS.ProcessEnv, threadsPerProcess: number): NodeJS.ProcessEnv {
  const kept = Object.entries(env).filter(
    ([name]) => !name.startsWith("HANGAR_") || MODEL_SETTING_NAMES.has(name),
  );
  return { OMP_NUM_THREADS: String(Math.max(1, threadsPerProcess)), ...Object.fromEntries(kept) };
}
