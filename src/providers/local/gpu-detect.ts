import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { GpuAssignment } from "../../domain/instance.ts";

const run = promisify(execFile);

/** GPUs that `nvidia-smi` reports on this host; none when it is missing or fails. */
export async function detectLocalGpus(nvidiaSmi = "nvidia-smi"): Promise<GpuAssignment[]> {
  try {
    const { stdout } = await run(
      nvidiaSmi,
      ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
      {
        timeout: 10_000,
      },
    );
    return parseNvidiaSmi(stdout);
  } catch {
    return [];
  }
}

export function parseNvidiaSmi(csv: string): GpuAssignment[] {
  return csv
    .split("\n")
    .map((line) => line.split(",").map((part) => part.trim()))
    .filter((parts) => parts.length === 3 && parts[0] !== "")
    .map(([index, name, memory]) => ({ index: Number(index), name: name!, memoryMiB: Number(memory) }));
}
