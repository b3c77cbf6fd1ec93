/**
 * The environment for processes the agent starts (notebook runners, model executables): the agent's
 * own HANGAR_* settings, its tokens among them, are dropped.
 */
export function childEnv(env: NodeJS.ProcessEnv, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const kept = Object.entries(env).filter(([name]) => !name.startsWith("HANGAR_"));
  return { ...Object.fromEntries(kept), ...extra };
}
