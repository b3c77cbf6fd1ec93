import { readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

/**
 * Bundles the two programs Hangar ships:
 * - dist/agent.mjs, one self-contained file that a bare instance fetches from /agent.mjs and runs;
 * - dist/hangar.mjs, the CLI and server with npm packages left external. `./hangar` runs it while it
 *   is newer than every source file: it spares each process Node's TypeScript stripping (~30 MB).
 *   Beside it, dist/chem-worker.mjs: the server's RDKit thread (src/chem/chemistry.ts).
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
  entryPoints: {
    hangar: join(root, "src/cli/main.ts"),
    "chem-worker": join(root, "src/chem/chem-worker.ts"),
  },
  outdir: join(root, "dist"),
  outExtension: { ".js": ".mjs" },
  packages: "external",
  banner: { js: "// Hangar CLI and server: bundled by scripts/build.ts" },
});
console.log("built dist/agent.mjs, dist/hangar.mjs and dist/chem-worker.mjs");
