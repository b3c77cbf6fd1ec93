import { join } from "node:path";
import { loadConfig } from "../config.ts";
import { REPO_ROOT, startServer } from "../server/server.ts";
import { HangarClient } from "./client.ts";
import { describeRun, downloadRun, submitNotebookRun, waitForRun } from "./commands.ts";

/**
 * The first run: the embedded default on a free port, the example notebook with the example dataset,
 * progress until it ends, and the results on disk. Returns the process exit code.
 */
export async function quickstart(dataDir: string, outDir: string): Promise<number> {
  const config = loadConfig(
    { ...process.env, HANGAR_LOG_LEVEL: process.env.HANGAR_LOG_LEVEL ?? "warn" },
    {
      dataDir,
      port: 0,
      bootstrapApiKey: process.env.HANGAR_BOOTSTRAP_API_KEY ?? undefined,
    },
  );
  const key = config.bootstrapApiKey ?? `hgr_quickstart_${Math.random().toString(36).slice(2)}${Date.now()}`;
  const server = await startServer({ ...config, bootstrapApiKey: key });
  try {
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
