import { alphafold3Spec } from "./alphafold3/spec.ts";
import { boltz2Spec } from "./boltz2/spec.ts";
import type { ModelSpec } from "./model.ts";
import { vinaSpec } from "./vina/spec.ts";

/** Every built-in model the control plane accepts work for, by name. Runners live with the agent. */
export const MODEL_SPECS: ReadonlyMap<string, ModelSpec> = new Map(
  [vinaSpec, boltz2Spec, alphafold3Spec].map((spec) => [spec.name, spec]),
);
