import type { ModelSpec } from "../model.ts";

export const boltz2Spec: ModelSpec = {
  name: "boltz2",
  version: "2",
  description:
    "Boltz-2 co-folds the target protein with each ligand and predicts binding affinity " +
    "(log10 IC50 in µM) and the probability that the ligand binds.",
  resources: { accelerator: "gpu", minGpuMemoryGiB: 24 },
  target: "protein_sequence",
  acceptsMsa: true,
  score: {
    name: "affinity_pred_value",
    unit: "log10(IC50/µM)",
    better: "lower",
    description:
      "Predicted log10 IC50 in µM: −3 is 1 nM, 0 is 1 µM. pIC50 = 6 − value. " +
      "Rank hits by affinity_probability_binary, potency by this value.",
  },
  maxLigandAtoms: 128,
  parameters: {
    recycling_steps: {
      type: "integer",
      description: "Recycling steps of the trunk.",
      default: 3,
      minimum: 1,
      maximum: 20,
    },
    sampling_steps: {
      type: "integer",
      description: "Diffusion sampling steps.",
      default: 200,
      minimum: 1,
      maximum: 1000,
    },
    diffusion_samples: {
      type: "integer",
      description: "Structures sampled per complex; the best by confidence is kept as model 0.",
      default: 1,
      minimum: 1,
      maximum: 25,
    },
    seed: {
      type: "integer",
      description: "Random seed, for reproducible runs.",
      minimum: 0,
      maximum: 2 ** 32 - 1,
    },
    msa_server_url: {
      type: "string",
      description:
        "MSA server (e.g. https://api.colabfold.com) to compute the protein's MSA with. " +
        "Without it Boltz-2 runs single-sequence (msa: empty), which is faster but less accurate.",
    },
    output_format: {
      type: "string",
      description: "Format of the predicted complex structure.",
      default: "mmcif",
      enum: ["mmcif", "pdb"],
    },
  },
  // One `boltz predict` over a directory of YAMLs loads the model once for all of them.
  packing: { perProcess: 64, parallel: 1 },
  // One A100-class GPU, the model loaded once per unit.
  expectedSecondsPerInput: 30,
};
