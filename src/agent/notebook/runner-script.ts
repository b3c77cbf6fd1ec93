import { access, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Text of run_notebook.py, defined by the agent bundler (esbuild `define: { HANGAR_RUNNER_SOURCE: ... }`)
 * because a single-file bundle has no .py next to it. Undefined when running from a source checkout.
 */
declare const HANGAR_RUNNER_SOURCE: string | undefined;

let resolved: Promise<string> | undefined;

/** Path of run_notebook.py on this machine: the source file, or a temp copy of the bundled text. */
export async function runnerScriptPath(): Promise<string> {
  resolved ??= locate().catch((err: unknown) => {
    resolved = undefined;
    throw err;
  });
  return resolved;
}

async function locate(): Promise<string> {
  // The bundled text wins: a bundle must not pick up whatever .py happens to lie next to it, and
  // import.meta.url may not even be a file URL there.
  if (typeof HANGAR_RUNNER_SOURCE === "string") {
    const dir = await mkdtemp(join(tmpdir(), "hangar-runner-"));
    const path = join(dir, "run_notebook.py");
    await writeFile(path, HANGAR_RUNNER_SOURCE, { mode: 0o644 });
    return path;
  }
  const path = fileURLToPath(new URL("./run_notebook.py", import.meta.url));
  try {
    await access(path);
  } catch {
    throw new Error(`Notebook runner not found at ${path} and HANGAR_RUNNER_SOURCE is not bundled in`);
  }
  return path;
}
