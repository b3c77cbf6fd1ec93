import type { Log, MainModule } from "@rdkit/rdkit";
import rdkitPackage from "@rdkit/rdkit";

/** RDKit (compiled to WebAssembly) plus the log that holds its complaint about the last rejected input. */
export interface Rdkit {
  readonly module: MainModule;
  /** Captures `rdApp.error`; null if this build cannot capture logs. */
  readonly errorLog: Log | null;
}

let loading: Promise<Rdkit> | undefined;

/**
 * Loads RDKit once per thread (about 0.2 s; in the server, the chemistry worker of chemistry.ts). The
 * package is CommonJS and finds its .wasm next to itself through __dirname, so Node needs no `locateFile`.
 */
export function loadRdkit(): Promise<Rdkit> {
  loading ??= rdkitPackage
    .default()
    .then((module) => ({ module, errorLog: module.set_log_capture("rdApp.error") }))
    .catch((error: unknown) => {
      // A failed load (missing .wasm, out of memory) should not stick: the next caller tries again.
      loading = undefined;
      throw error;
    });
  return loading;
}
