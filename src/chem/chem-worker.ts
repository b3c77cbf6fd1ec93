/**
 * The chemistry worker thread: loads RDKit once and answers `chemistry.ts`'s requests one at a time.
 * Its memory (RDKit's WebAssembly heap and the garbage of a big check) goes when the thread ends.
 */
import { parentPort } from "node:worker_threads";
import type { ChemReply, ChemRequest } from "./chemistry.ts";
import { loadRdkit } from "./rdkit.ts";
import { checkLigand, parseSdfLigands } from "./rdkit-checks.ts";

const port = parentPort!;
port.on("message", async (request: ChemRequest) => {
  let reply: ChemReply;
  try {
    const rdkit = await loadRdkit();
    reply =
      request.op === "check"
        ? { id: request.id, result: request.smiles.map((smiles) => checkLigand(rdkit, smiles)) }
        : { id: request.id, result: parseSdfLigands(rdkit, request.text) };
  } catch (error) {
    reply = { id: request.id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(reply);
});
