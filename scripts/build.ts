import { readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

/**
 * Bundles the two programs Hangar ships:
 * - dist/agent.mjs, one self-contained file that a bare instance fetches from /agent.mjs and runs;
 * - dist/hangar.mjs, the CLI and server with npm packages left external. `./hangar` runs it while it
 *   is newer than every source file: it spares each process Node's TypeScript stripping (~30 MB).
 */
const root = join(import.meta.dirname, "..");
const runnerSource = readFileSync(join(root, "src/agent/notebook/run_notebook.py"), "utf8");
const common = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node24",
  logLevel: "warning",
  define: { HANGAR_RUNNER_SOURCE: JSON.stringify(runnerSource) },
} as const;

await build({
  ...common,
  entryPoints: [join(root, "src/agent/main.ts")],
  outfile: join(root, "dist/agent.mjs"),
  banner: { js: "// Hangar agent: bundled by scripts/build.ts" },
});
await build({
  ...common,
  entryPoints: [join(root, "src/cli/main.ts")],
  outfile: join(root, "dist/hangar.mjs"),
  packages: "external",
  banner: { js: "// Hangar CLI and server: bundled by scripts/build.ts" },
});
console.log("built dist/agent.mjs and dist/hangar.mjs");
