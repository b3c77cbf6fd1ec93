import type { ModelSpec } from "../model.ts";

export const alphafold3Spec: ModelSpec = {
  name: "alphafold3",
  version: "3",
  description:
    "AlphaFold3 co-folds the target protein with each ligand (single-sequence, no data pipeline) and " +
    "ranks the complexes by its confidence; it predicts structure and confidence, not affinity.",
  resources: { accelerator: "gpu", minGpuMemoryGiB: 80 },
  target: "protein_sequence",
  acceptsMsa: true,
  score: {
    name: "ranking_score",
    unit: "",
    better: "higher",
    description:
      "AlphaFold3's ranking score of the best sample: 0.8·ipTM + 0.2·pTM + 0.5·disorder − 100·has_clash.",
  },
  parameters: {
    num_diffusion_samples: {
      type: "integer",
      description: "Diffusion samples per seed; the best by ranking_score is reported.",
      default: 5,
      minimum: 1,
      maximum: 25,
    },
    num_recycles: {
      type: "integer",
      description: "Recycles of the trunk.",
      default: 10,
      minimum: 1,
      maximum: 20,
    },
    seed: {
      type: "integer",
      description: "Model seed (the input's modelSeeds).",
      default: 1,
      minimum: 0,
      maximum: 2 ** 32 - 1,
    },
  },
  // One run_alphafold.py over an input directory loads the weights once for all of its inputs.
  packing: { perProcess: 16, parallel: 1 },
  // One structure, with the MSA search skipped or precomputed.
  expectedSecondsPerInput: 600,
};
