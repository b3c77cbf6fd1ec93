import { createHash } from "node:crypto";
import { access, rename, writeFile } from "node:fs/promises";
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
    // Named by content: every agent of one version shares one copy instead of leaving one each.
    const digest = createHash("sha256").update(HANGAR_RUNNER_SOURCE).digest("hex").slice(0, 16);
    const path = join(tmpdir(), `hangar-runner-${digest}.py`);
    const partial = `${path}.${process.pid}.tmp`;
    await writeFile(partial, HANGAR_RUNNER_SOURCE, { mode: 0o644 });
    await rename(partial, path);
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
