import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../config.ts";
import { ADMIN_KEY_FILE, REPO_ROOT, startServer } from "../server/server.ts";
import { HangarClient } from "./client.ts";
import { describeRun, downloadRun, submitNotebookRun, waitForRun } from "./commands.ts";

/**
 * The first run: the embedded default on a free port, the example notebook with the example dataset,
 * progress until it ends, and the results on disk. Returns the process exit code.
 */
export async function quickstart(dataDir: string, outDir: string): Promise<number> {
  const config = loadConfig(
    { ...process.env, HANGAR_LOG_LEVEL: process.env.HANGAR_LOG_LEVEL ?? "warn" },
    { dataDir, port: 0 },
  );
  // The deployment's own admin key, created and saved on first start, so that `./hangar server` and
  // the other commands work on the same data directory afterwards.
  const server = await startServer(config);
  try {
    const key = config.bootstrapApiKey ?? savedAdminKey(dataDir);
    process.stderr.write(
      `Hangar is running at ${server.url} (store: ${server.ctx.store.dialect}, data: ${dataDir})\n`,
    );
    const client = new HangarClient(server.url, key);
    const examples = join(REPO_ROOT, "examples");
    let run = await submitNotebookRun(client, join(examples, "sales-report.ipynb"), {
      dataset: [join(examples, "data")],
      param: ["region=north", "top_n=3"],
    });
    process.stderr.write(`submitted run ${run.id}: examples/sales-report.ipynb with examples/data/\n`);
    run = await waitForRun(client, run.id, false);
    process.stdout.write(`${describeRun(run)}\n`);
    const files = await downloadRun(client, run.id, join(outDir, run.id));
    process.stdout.write(`\nResults of ${run.id}:\n${files.map((f) => `  ${f}`).join("\n")}\n`);
    return run.status === "succeeded" ? 0 : 1;
  } finally {
    await server.close();
  }
}

function savedAdminKey(dataDir: string): string {
  const file = join(dataDir, ADMIN_KEY_FILE);
  if (!existsSync(file)) {
    throw new Error(
      `${dataDir} already holds a deployment whose admin key is not in ${file}: set HANGAR_BOOTSTRAP_API_KEY to one of its keys`,
    );
  }
  return readFileSync(file, "utf8").trim();
}
