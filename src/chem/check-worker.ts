import { parentPort } from "node:worker_threads";
import { checkLigand, type LigandCheck } from "./ligands.ts";
import { loadRdkit } from "./rdkit.ts";

/** A worker thread's side of the pool: checks the SMILES it is sent, one message per slice. */
const rdkit = await loadRdkit();
parentPort!.on("message", (smiles: string[]) => {
  const checks: LigandCheck[] = smiles.map((one) => checkLigand(rdkit, one));
  parentPort!.postMessage(checks);
});
