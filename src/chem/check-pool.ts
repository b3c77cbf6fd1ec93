import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { unprocessable } from "../domain/errors.ts";
import {
  assembleValidation,
  checkLigand,
  type LigandCheck,
  type LigandInput,
  type LigandValidation,
} from "./ligands.ts";
import { loadRdkit } from "./rdkit.ts";

/** Below this many distinct SMILES, starting threads (each loads RDKit, ~0.2 s) costs more than it saves. */
const INLINE_LIMIT = 2_000;

/**
 * `validateLigands` for big batches: RDKit (WebAssembly) takes about 0.3 ms per SMILES, so 100,000
 * would hold the event loop for half a minute. The distinct SMILES are checked by one worker thread
 * per core instead, and the server keeps answering (heartbeats included) meanwhile.
 */
export async function validateLigandsInParallel(
  ligands: readonly LigandInput[],
  options: { maxLigands: number; maxHeavyAtoms?: number },
): Promise<LigandValidation> {
  if (ligands.length > options.maxLigands) {
    throw unprocessable(
      "too_many_ligands",
      `${ligands.length} ligands given; at most ${options.maxLigands} are accepted at once`,
      { count: ligands.length, max: options.maxLigands },
    );
  }
  const distinct = [...new Set(ligands.map((l) => l.smiles))];
  let checks: Map<string, LigandCheck>;
  if (distinct.length <= INLINE_LIMIT) {
    const rdkit = await loadRdkit();
    checks = new Map(distinct.map((smiles) => [smiles, checkLigand(rdkit, smiles)]));
  } else {
    checks = await checkInWorkers(distinct, Math.max(1, availableParallelism()));
  }
  return assembleValidation(ligands, options, (smiles) => checks.get(smiles)!);
}

async function checkInWorkers(smiles: string[], threads: number): Promise<Map<string, LigandCheck>> {
  const size = Math.ceil(smiles.length / threads);
  const slices = Array.from({ length: threads }, (_, i) => smiles.slice(i * size, (i + 1) * size));
  const results = await Promise.all(
    slices.map(async (slice) => {
      const worker = new Worker(new URL("./check-worker.ts", import.meta.url));
      try {
        return await new Promise<LigandCheck[]>((resolve, reject) => {
          worker.once("message", resolve);
          worker.once("error", reject);
          worker.postMessage(slice);
        });
      } finally {
        await worker.terminate();
      }
    }),
  );
  const checks = new Map<string, LigandCheck>();
  slices.forEach((slice, i) => {
    slice.forEach((one, j) => {
      checks.set(one, results[i]![j]!);
    });
  });
  return checks;
}
