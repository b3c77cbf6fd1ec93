import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import { loadConfig } from "../config.ts";
import { REPO_ROOT, startServer } from "../server/server.ts";
import { addAccountCommands } from "./accounts.ts";
import { ApiError, HangarClient } from "./client.ts";
import { describeRun, downloadRun, pushDataset, submitNotebookRun, waitForRun } from "./commands.ts";
import { addOfferCommands } from "./offers.ts";
import { collect, exitCodeOf, integer, print } from "./options.ts";
import { addPredictionCommands, downloadPredictionFiles } from "./predictions.ts";
import { quickstart } from "./quickstart.ts";

const program = new Command()
  .name("hangar")
  .description("Run notebooks with their datasets on the cheapest suitable machine")
  .showHelpAfterError();

program
  .command("server")
  .description("start the control plane (embedded default: SQLite, local disk, this machine)")
  .option("--port <port>", "port to listen on (HANGAR_PORT, default 7420)", integer)
  .option("--data-dir <dir>", "data directory (HANGAR_DATA_DIR, default .hangar)")
  .action(async (options: { port?: number; dataDir?: string }) => {
    const config = loadConfig(process.env, {
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(options.dataDir ? { dataDir: resolve(options.dataDir) } : {}),
    });
    const server = await startServer(config);
    if (server.createdApiKey) {
      process.stderr.write(
        `\nAdmin API key (shown once; saved in ${config.dataDir}/admin-api-key):\n  ${server.createdApiKey}\n\n`,
      );
    }
    const shutdown = () => {
      process.stderr.write("shutting down: no new work; waiting for running jobs…\n");
      server.close().then(
        () => process.exit(0),
        (error: unknown) => {
          process.stderr.write(`shutdown failed: ${(error as Error).message}\n`);
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  });

program
  .command("run")
  .description("upload a notebook (and datasets) and run it")
  .argument("<notebook>", "path to an .ipynb file")
  .option("-d, --dataset <path-or-id>", "a file, folder or dataset id (ds_…); repeatable", collect, [])
  .option(
    "-p, --param <name=value>",
    "a parameter; the value parses as JSON when it can; repeatable",
    collect,
    [],
  )
  .option("--gpu <type>", "GPU type to run on, e.g. A100-80GB")
  .option("--gpus <n>", "how many of them (with --gpu)", integer)
  .option(
    "--strategy <name>",
    "how a cloud instance is launched for it: coldstart, roundrobin or race (default: the server's)",
  )
  .option("--priority <n>", "higher runs first", integer)
  .option("--timeout <seconds>", "fail the run after this many seconds", integer)
  .option("--max-attempts <n>", "attempts before the run fails for good", integer)
  .option("--wait", "wait for the run to finish, showing progress")
  .option("--json", "print one JSON object instead of text")
  .action(async (notebook: string, options) => {
    const client = HangarClient.fromEnv();
    let run = await submitNotebookRun(client, notebook, options);
    if (!options.json) process.stderr.write(`submitted ${run.id}\n`);
    if (options.wait) run = await waitForRun(client, run.id, Boolean(options.json));
    print(options.json ? run : options.wait ? describeRun(run) : run.id);
    if (options.wait) process.exitCode = exitCodeOf(run.status);
  });

program
  .command("runs")
  .description("list recent runs")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const { runs } = await HangarClient.fromEnv().listRuns();
    if (options.json) return print(runs);
    for (const run of runs) {
      const progress = run.progress ? `${run.progress.done}/${run.progress.total}` : "";
      print(`${run.id}  ${run.status.padEnd(9)}  ${progress.padEnd(7)}  ${run.created_at}`);
    }
  });

program
  .command("status")
  .description("show a run")
  .argument("<id>")
  .option("--json", "print JSON")
  .action(async (id: string, options: { json?: boolean }) => {
    const run = await HangarClient.fromEnv().getRun(id);
    print(options.json ? run : describeRun(run));
  });

program
  .command("logs")
  .description("print a run's log")
  .argument("<id>")
  .option("-f, --follow", "stream the log until the run ends")
  .action(async (id: string, options: { follow?: boolean }) => {
    const client = HangarClient.fromEnv();
    if (!options.follow) return print(await client.logs(id));
    const stream = client.followLogs(id);
    for (;;) {
      const next = await stream.next();
      if (next.done) {
        process.stderr.write(`run ended: ${next.value}\n`);
        return;
      }
      process.stdout.write(next.value);
    }
  });

program
  .command("download")
  .description(
    "download a run's executed notebook, log and outputs; a batch's artifacts; a prediction's files",
  )
  .argument("<id>")
  .option("--out <dir>", "where to put them (default ./hangar-output/<id>)")
  .action(async (id: string, options: { out?: string }) => {
    const out = resolve(options.out ?? `hangar-output/${id}`);
    const client = HangarClient.fromEnv();
    // Batches and prediction jobs have their own files; runs keep theirs.
    const saved =
      id.startsWith("batch_") || id.startsWith("job_")
        ? await downloadPredictionFiles(client, id, out)
        : await downloadRun(client, id, out);
    for (const path of saved) print(path);
  });

program
  .command("cancel")
  .description("cancel a queued or running run")
  .argument("<id>")
  .action(async (id: string) => {
    const run = await HangarClient.fromEnv().cancelRun(id);
    print(run.status === "cancelled" ? `${id} cancelled` : `${id}: cancellation sent to its instance`);
  });

program
  .command("datasets")
  .description("manage datasets")
  .addCommand(
    new Command("push")
      .description("upload files and folders as one dataset")
      .argument("<paths...>")
      .addOption(new Option("--name <name>", "dataset name"))
      .option("--json", "print JSON")
      .action(async (paths: string[], options: { name?: string; json?: boolean }) => {
        const dataset = await pushDataset(HangarClient.fromEnv(), paths, options.name);
        print(
          options.json
            ? dataset
            : `${dataset.id}  ${dataset.files.length} file(s), ${dataset.total_size} bytes`,
        );
      }),
  );

addPredictionCommands(program);
addAccountCommands(program);
addOfferCommands(program);

program
  .command("quickstart")
  .description("start the embedded default, run the example notebook with its dataset, download the results")
  .option("--data-dir <dir>", "data directory", ".hangar")
  .option("--out <dir>", "where to put the results", "hangar-output")
  .action(async (options: { dataDir: string; out: string }) => {
    process.exitCode = await quickstart(resolve(options.dataDir), resolve(options.out));
  });

program
  .command("bench")
  .description(
    "run every benchmark beside its reference (peer queues, API load, batches, Vina, notebooks, provisioning, fair share) and write docs/benchmarks/report.{json,md}",
  )
  .option("--quick", "every suite small, under 3 minutes; writes quick-report.{json,md}")
  .option("--only <suites>", "comma-separated: scheduler, api, screen, notebook, provisioning, fairshare")
  .option("--out <dir>", "where the report goes", join(REPO_ROOT, "docs", "benchmarks"))
  .action(async (options: { quick?: boolean; only?: string; out: string }) => {
    // The benchmarks live in bench/ of the checkout, beside the references they install there.
    const args = [join(REPO_ROOT, "bench", "run.ts"), "--out", resolve(options.out)];
    if (options.quick) args.push("--quick");
    if (options.only) args.push("--only", options.only);
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: "inherit" });
    process.exitCode = await new Promise<number>((done) => child.once("exit", (code) => done(code ?? 1)));
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof ApiError) {
    process.stderr.write(`error: ${error.message} (${error.code}, HTTP ${error.status})\n`);
    if (error.details && typeof error.details === "object")
      process.stderr.write(`${JSON.stringify(error.details)}\n`);
  } else {
    process.stderr.write(`error: ${(error as Error).message}\n`);
  }
  process.exitCode = 2;
});
