import { AlphaFold3Runner } from "../../models/alphafold3/runner.ts";
import { Boltz2Runner } from "../../models/boltz2/runner.ts";
import type { ModelRunner } from "../../models/model.ts";
import { VinaRunner } from "../../models/vina/runner.ts";

/** What an agent can run, by model name: every built-in model (each checks its own install). */
export function builtInRunners(): ReadonlyMap<string, ModelRunner> {
  return new Map(
    [new VinaRunner(), new Boltz2Runner(), new AlphaFold3Runner()].map((runner) => [
      runner.spec.name,
      runner,
    ]),
  );
}
