import type { ModelSpec, ParameterSpec } from "../model.ts";

function boxCentre(axis: string): ParameterSpec {
  return {
    type: "number",
    description: `Box centre, ${axis} (Å). Filled from box_ligand when one is given.`,
  };
}

function boxSize(axis: string): ParameterSpec {
  return {
    type: "number",
    description:
      `Box edge along ${axis} (Å): the reference ligand's extent plus ~5–10 Å each side. ` +
      "Filled from box_ligand when one is given; Vina warns above 27,000 Å³ in all.",
    minimum: 1,
  };
}

/** AutoDock Vina 1.2 (Debian's `autodock-vina`): docks one ligand into a rigid receptor, CPU only. */
export const vinaSpec: ModelSpec = {
  name: "vina",
  // Static; the runner reports the exact `vina --version` of the instance in each result's details.
  version: "1.2",
  description:
    "AutoDock Vina: docks each ligand (3D conformer from openbabel) into a rigid receptor inside a search box " +
    "and scores the poses with an empirical free-energy estimate.",
  resources: { accelerator: "cpu" },
  target: "receptor",
  score: {
    name: "affinity_kcal_mol",
    unit: "kcal/mol",
    better: "lower",
    description: "Vina's estimated binding affinity of the best pose; more negative binds more strongly.",
  },
  parameters: {
    center_x: boxCentre("x"),
    center_y: boxCentre("y"),
    center_z: boxCentre("z"),
    size_x: boxSize("x"),
    size_y: boxSize("y"),
    size_z: boxSize("z"),
    exhaustiveness: {
      type: "integer",
      description:
        "Search effort (independent Monte Carlo runs); raise it for large boxes or flexible ligands.",
      default: 8,
      minimum: 1,
      maximum: 64,
    },
    num_modes: {
      type: "integer",
      description: "Most poses to keep per ligand.",
      default: 9,
      minimum: 1,
      maximum: 20,
    },
    energy_range: {
      type: "number",
      description: "Largest gap (kcal/mol) between the best and the worst pose kept.",
      default: 3,
      minimum: 0,
    },
    seed: {
      type: "integer",
      description: "Random seed, for reproducible poses.",
      default: 42,
      minimum: -2147483648,
      maximum: 2147483647,
    },
    scoring: {
      type: "string",
      description: "Scoring function.",
      default: "vina",
      enum: ["vina", "vinardo"],
    },
  },
  // One ligand per process and one thread each, many processes side by side: Vina's own threading
  // stops at `exhaustiveness` threads, so this keeps every core busy.
  packing: { perProcess: 1, parallel: "cores" },
  // Exhaustiveness 8 on one core: tens of seconds per ligand.
  expectedSecondsPerInput: 60,
};
