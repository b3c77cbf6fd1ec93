/** GPU types Hangar can request; names follow the clouds' common short names. */
export const KNOWN_GPU_TYPES = [
  "T4",
  "L4",
  "A10",
  "A10G",
  "L40S",
  "RTX3090",
  "RTX4090",
  "RTX5090",
  "A40",
  "A100-40GB",
  "A100-80GB",
  "H100",
  "H200",
  "B200",
] as const;

export function normaliseGpuType(name: string): string | null {
  const wanted = name.trim().toUpperCase().replaceAll(" ", "");
  return KNOWN_GPU_TYPES.find((known) => known.toUpperCase() === wanted) ?? null;
}
