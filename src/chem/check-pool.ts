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

/** One worker thread with its own RDKit, checking slices of SMILES it is sent, one slice at a time. */
export class SmilesChecker {
  readonly #worker = new Worker(new URL("./check-worker.ts", import.meta.url));

  check(smiles: string[]): Promise<LigandCheck[]> {
    return new Promise<LigandCheck[]>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      this.#worker.once("error", onError);
      this.#worker.once("message", (checks: LigandCheck[]) => {
        this.#worker.off("error", onError);
        resolve(checks);
      });
      this.#worker.postMessage(smiles);
    });
  }

  async close(): Promise<void> {
    await this.#worker.terminate();
  }
}

/** Checks each distinct SMILES once, `threads` workers side by side, `slice` SMILES per message. */
export async function checkInWorkers(
  smiles: readonly string[],
  threads: number,
  slice = 5_000,
): Promise<Map<string, LigandCheck>> {
  const checkers = Array.from({ length: threads }, () => new SmilesChecker());
  const checks = new Map<string, LigandCheck>();
  let next = 0;
  try {
    await Promise.all(
      checkers.map(async (checker) => {
        for (let start = next; start < smiles.length; start = next) {
          next += slice;
          const part = smiles.slice(start, start + slice);
          const results = await checker.check(part);
          part.forEach((one, i) => {
            checks.set(one, results[i]!);
          });
        }
      }),
    );
  } finally {
    await Promise.all(checkers.map((checker) => checker.close()));
  }
  return checks;
}
