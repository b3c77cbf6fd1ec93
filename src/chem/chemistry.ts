import { Worker } from "node:worker_threads";
import type { Chemistry, LigandCheck, LigandList } from "./ligands.ts";

export type ChemRequest =
  | { id: number; op: "check"; smiles: readonly string[] }
  | { id: number; op: "sdf"; text: string };

export type ChemReply = { id: number; result: LigandCheck[] | LigandList } | { id: number; error: string };

/** The bundle (dist/hangar.mjs) runs dist/chem-worker.mjs; the sources run the worker's source. */
const WORKER_URL = import.meta.url.endsWith(".mjs")
  ? new URL("./chem-worker.mjs", import.meta.url)
  : new URL("./chem-worker.ts", import.meta.url);

interface Waiting {
  resolve: (reply: ChemReply) => void;
  reject: (error: Error) => void;
}

/**
 * RDKit in a worker thread, started on first use and ended after `idleMs` without requests. The
 * server's thread stays free to answer requests while a 100,000-ligand batch is checked, and the
 * ~100 MB RDKit takes is given back once checking stops (WebAssembly memory never shrinks, so
 * ending the thread is the only way to return it).
 */
export class WorkerChemistry implements Chemistry {
  readonly #idleMs: number;
  #thread: { worker: Worker; waiting: Map<number, Waiting> } | null = null;
  #nextId = 1;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(options: { idleMs: number }) {
    this.#idleMs = options.idleMs;
  }

  async checkSmiles(smiles: readonly string[]): Promise<LigandCheck[]> {
    if (smiles.length === 0) return [];
    return this.#ask<LigandCheck[]>({ op: "check", smiles });
  }

  async readSdf(text: string): Promise<LigandList> {
    return this.#ask<LigandList>({ op: "sdf", text });
  }

  /** Whether the worker (and RDKit's memory) is there now. */
  get running(): boolean {
    return this.#thread !== null;
  }

  async close(): Promise<void> {
    clearTimeout(this.#idleTimer);
    const thread = this.#thread;
    this.#thread = null;
    await thread?.worker.terminate();
  }

  /** Sends one request; the answer's type is the one its `op` produces (chem-worker.ts). */
  #ask<Result extends LigandCheck[] | LigandList>(
    request: { op: "check"; smiles: readonly string[] } | { op: "sdf"; text: string },
  ): Promise<Result> {
    clearTimeout(this.#idleTimer);
    const { worker, waiting } = this.#start();
    // A waiting caller keeps the process alive; an idle worker must not (see #start).
    worker.ref();
    const id = this.#nextId++;
    return new Promise<ChemReply>((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...request, id } satisfies ChemRequest);
    }).then((reply) => {
      if ("error" in reply) throw new Error(`RDKit failed: ${reply.error}`);
      return reply.result as Result;
    });
  }

  #start(): { worker: Worker; waiting: Map<number, Waiting> } {
    if (this.#thread) return this.#thread;
    const thread = { worker: new Worker(WORKER_URL), waiting: new Map<number, Waiting>() };
    const { worker, waiting } = thread;
    worker.on("message", (reply: ChemReply) => {
      waiting.get(reply.id)?.resolve(reply);
      waiting.delete(reply.id);
      if (waiting.size === 0) {
        worker.unref();
        if (this.#thread === thread) {
          this.#idleTimer = setTimeout(() => void this.close(), this.#idleMs).unref();
        }
      }
    });
    const fail = (error: Error) => {
      if (this.#thread === thread) this.#thread = null;
      for (const pending of waiting.values()) pending.reject(error);
      waiting.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`the chemistry worker stopped (exit code ${code})`)));
    this.#thread = thread;
    return thread;
  }
}
