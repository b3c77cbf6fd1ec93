import { readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

/** Bundles the agent into one file that a bare instance can fetch from /agent.mjs and run with Node 24. */
const root = join(import.meta.dirname, "..");
const runnerSource = readFileSync(join(root, "src/agent/notebook/run_notebook.py"), "utf8");

await build({
  entryPoints: [join(root, "src/agent/main.ts")],
  outfile: join(root, "dist/agent.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node24",
  define: { HANGAR_RUNNER_SOURCE: JSON.stringify(runnerSource) },
  banner: { js: "// Hangar agent: bundled by scripts/build-agent.ts" },
  logLevel: "warning",
});
console.log("built dist/agent.mjs");
