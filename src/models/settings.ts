/**
 * Environment variables that tell an instance where its models live: executables, caches and
 * weights. None is a secret: the server passes them to local agents, and agents to model processes.
 */
export const MODEL_SETTINGS = [
  "HANGAR_VINA_CMD",
  "HANGAR_OBABEL_CMD",
  "HANGAR_BOLTZ_CMD",
  "HANGAR_BOLTZ_CACHE",
  "HANGAR_AF3_CMD",
  "HANGAR_AF3_MODEL_DIR",
] as const;
