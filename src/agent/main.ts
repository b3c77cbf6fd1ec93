import { mkdir, rm, stat } from "node:fs/promises";
import { availableParallelism, hostname, tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { AnyAssignment, Assignment, UploadTarget } from "../app/agent-hub.ts";
import type { JobError, JobProgress } from "../domain/job.ts";
import { ControlPlaneClient, ControlPlaneError, ControlPlaneUnreachable } from "./control-plane-client.ts";
import { selfTerminator } from "./kill-switch.ts";
import { LogShipper } from "./log-shipper.ts";
import { executeNotebook, type NotebookOutcome } from "./notebook/executor.ts";
import { builtInRunners } from "./predict/runners.ts";
import { PredictionUnitRunner } from "./predict/unit.ts";
import { type StopReason, stoppedEnding } from "./stop-reasons.ts";
import { downloadTo, listFiles, TransferError, uploadFrom } from "./transfer.ts";

/** Failures that another attempt cannot fix: the notebook itself is at fault. */
const PERMANENT = new Set(["cell_error", "invalid_notebook", "invalid_parameters", "timeout"]);

interface AgentSettings {
  url: string;
  instanceId: string;
  bootstrapToken: string;
  workDir: string;
  python: string | undefined;
  /** How long the control plane may stay unreachable before the kill switch ends this instance. */
  reconnectMs: number;
  /** The instance ends itself after this long (0: never), even with work in hand. */
  maxLifetimeMs: number;
  /** Cores this agent uses for side-by-side model processes (HANGAR_AGENT_CORES, default all). */
  cores: number;
}

function settingsFromEnv(env: NodeJS.ProcessEnv): AgentSettings {
  const required = (name: string) => {
    const value = env[name];
    if (!value) throw new Error(`${name} is not set; the control plane passes it when it launches an agent`);
    return value;
  };
  return {
    url: required("HANGAR_URL"),
    instanceId: required("HANGAR_INSTANCE_ID"),
    bootstrapToken: required("HANGAR_BOOTSTRAP_TOKEN"),
    workDir: env.HANGAR_WORK_DIR ?? join(tmpdir(), "hangar-agent"),
    python: env.HANGAR_PYTHON,
    reconnectMs: Number(env.HANGAR_AGENT_RECONNECT_S ?? 900) * 1000,
    maxLifetimeMs: Number(env.HANGAR_AGENT_MAX_LIFETIME_S ?? 0) * 1000,
    cores: Math.max(1, Number(env.HANGAR_AGENT_CORES) || availableParallelism()),
  };
}

const log = (message: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg: message, ...fields })}\n`);

class Agent {
  readonly #settings: AgentSettings;
  readonly #client: ControlPlaneClient;
  readonly #shutdown = new AbortController();
  readonly #runners = builtInRunners();
  #heartbeatS = 5;
  #python = "/usr/bin/python3";

  constructor(settings: AgentSettings) {
    this.#settings = settings;
    this.#client = new ControlPlaneClient(settings.url, settings.reconnectMs);
  }

  stop(): void {
    this.#shutdown.abort();
  }

  async run(): Promise<void> {
    const registration = await this.#client.post<{
      agent_token: string;
      heartbeat_s: number;
      python: string;
    }>("/agent/v1/register", {
      instance_id: this.#settings.instanceId,
      bootstrap_token: this.#settings.bootstrapToken,
    });
    this.#client.token = registration!.agent_token;
    this.#heartbeatS = registration!.heartbeat_s;
    this.#python = this.#settings.python ?? registration!.python;
    log("registered", { instance_id: this.#settings.instanceId, host: hostname() });
    const predictions = new PredictionUnitRunner(this.#client, {
      workRoot: this.#settings.workDir,
      heartbeatS: this.#heartbeatS,
      runners: this.#runners,
      cores: this.#settings.cores,
    });
    let lastBatch: string | null = null;
    while (!this.#shutdown.signal.aborted) {
      let assignment: AnyAssignment | null;
      try {
        assignment = await this.#client.post<AnyAssignment>(
          "/agent/v1/claim",
          {
            wait_s: 20,
            models: [...this.#runners.keys()],
            cores: this.#settings.cores,
            ...(lastBatch ? { prefer_batch: lastBatch } : {}),
          },
          60_000,
          this.#shutdown.signal,
        );
      } catch (error) {
        if (this.#shutdown.signal.aborted) return;
        if (error instanceof ControlPlaneError && error.status === 410) {
          log("instance terminated by the control plane; exiting");
          return;
        }
        throw error;
      }
      if (assignment?.kind === "notebook") await this.#runJob(assignment);
      if (assignment?.kind === "predict") {
        lastBatch = assignment.batch_id;
        await predictions.run(assignment, this.#shutdown.signal);
      }
    }
  }

  async #runJob(job: Assignment): Promise<void> {
    const lease = { lease_token: job.lease_token };
    const base = `/agent/v1/jobs/${job.job_id}`;
    const dir = join(this.#settings.workDir, `${job.job_id}-${job.attempt}`);
    const inputDir = join(dir, "input");
    const outputDir = join(dir, "output");
    // A folder of its own: a notebook called executed.ipynb must not be overwritten by its result.
    const notebookPath = join(dir, "source", basename(job.notebook.name));
    const executedPath = join(dir, "executed.ipynb");
    const shipper = new LogShipper(this.#client);
    const logs = shipper.open(job);
    const stop = new AbortController();
    let stopReason: StopReason | null = null;
    const stopWith = (reason: StopReason) => {
      if (stopReason) return;
      stopReason = reason;
      stop.abort();
    };
    const onShutdown = () => stopWith("shutdown");
    this.#shutdown.signal.addEventListener("abort", onShutdown);
    const timeout = setTimeout(() => stopWith("timeout"), job.timeout_s * 1000);
    let progress: JobProgress = { done: 0, total: 0, phase: "downloading inputs" };
    const beat = async () => {
      try {
        const answer = await this.#client.post<{ cancel: boolean }>(`${base}/heartbeat`, {
          ...lease,
          progress,
        });
        if (answer?.cancel) stopWith("cancel");
      } catch (error) {
        if (error instanceof ControlPlaneError && error.status === 409) stopWith("lease_lost");
      }
    };
    const heartbeat = setInterval(() => void beat(), this.#heartbeatS * 1000);
    log("job started", { job_id: job.job_id, attempt: job.attempt });

    let outcome: NotebookOutcome | { status: "failed"; error: JobError };
    try {
      await mkdir(inputDir, { recursive: true });
      await mkdir(outputDir, { recursive: true });
      logs.line(`attempt ${job.attempt} on instance ${this.#settings.instanceId} (${hostname()})`);
      await downloadTo(job.notebook.url, notebookPath, stop.signal);
      for (const input of job.inputs) {
        await downloadTo(input.url, join(inputDir, ...input.path.split("/")), stop.signal);
      }
      logs.line(`downloaded the notebook and ${job.inputs.length} input file(s)`);
      progress = { done: 0, total: 0, phase: "starting kernel" };
      void beat();
      outcome = await executeNotebook({
        notebookPath,
        outputNotebookPath: executedPath,
        parameters: job.parameters,
        workDir: dir,
        env: {
          HANGAR_INPUT_DIR: inputDir,
          HANGAR_OUTPUT_DIR: outputDir,
          PYDEVD_DISABLE_FILE_VALIDATION: "1",
        },
        pythonPath: this.#python,
        signal: stop.signal,
        onEvent: (event) => {
          switch (event.event) {
            case "start":
              progress = {
                done: 0,
                total: event.total_cells,
                phase: `running (0/${event.total_cells} cells)`,
              };
              break;
            case "cell_start":
              progress = {
                done: event.index,
                total: event.total,
                phase: `running cell ${event.index + 1}/${event.total}`,
              };
              logs.line(`cell ${event.index + 1}/${event.total}`);
              break;
            case "cell_end":
              progress = {
                done: event.index + 1,
                total: event.total,
                phase: `ran cell ${event.index + 1}/${event.total}`,
              };
              break;
            case "stream":
              logs.write(event.name, event.text);
              break;
            case "warning":
              logs.line(`warning: ${event.message}`);
              break;
            case "error":
              logs.write("stderr", `${event.traceback.join("\n")}\n`);
              break;
            case "runner_stderr":
              logs.write("runner", `${event.text}\n`);
              break;
          }
        },
      });
    } catch (error) {
      outcome = stop.signal.aborted
        ? { status: "cancelled" }
        : {
            status: "failed",
            error: { code: "agent_error", message: (error as Error).message, retryable: true },
          };
    } finally {
      clearTimeout(timeout);
      this.#shutdown.signal.removeEventListener("abort", onShutdown);
    }

    // The heartbeat keeps running through upload and finish: a large upload must not lose the lease.
    try {
      if (stopReason === "lease_lost") {
        logs.line("lease lost: this attempt was ended by the control plane");
        return;
      }
      if (stopReason === "shutdown") {
        await this.#client.post(`${base}/release`, lease);
        log("job released on shutdown", { job_id: job.job_id });
        return;
      }
      progress = { ...progress, phase: "uploading outputs" };
      void beat();
      let finish = this.#finishBody(outcome, stopReason, job.timeout_s);
      try {
        const uploaded = await this.#uploadResults(base, lease, executedPath, outputDir);
        logs.line(`uploaded ${uploaded} file(s)`);
      } catch (error) {
        logs.line(`upload failed: ${(error as Error).message}`);
        // A notebook that failed or was cancelled keeps that outcome; only a success becomes a failure.
        if (finish.status === "succeeded") finish = { status: "failed", error: uploadError(error) };
      }
      if (stopReason === "lease_lost") return;
      logs.line(
        `finished: ${finish.status}${finish.error ? ` (${finish.error.code}: ${finish.error.message})` : ""}`,
      );
      await shipper.close().catch((error: unknown) => {
        log("shipping the last log lines failed", { job_id: job.job_id, error: (error as Error).message });
      });
      await this.#client.post(`${base}/finish`, { ...lease, ...finish });
      log("job finished", { job_id: job.job_id, status: finish.status });
    } catch (error) {
      log("ending the job failed", { job_id: job.job_id, error: (error as Error).message });
    } finally {
      clearInterval(heartbeat);
      await shipper.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Uploads the executed notebook and every output file, even after a failure. */
  async #uploadResults(
    base: string,
    lease: { lease_token: string },
    executedPath: string,
    outputDir: string,
  ) {
    const outputs = (await listFiles(outputDir)).map((path) => ({
      path: `output/${path}`,
      file: join(outputDir, path),
    }));
    const hasExecuted = await stat(executedPath).then(
      () => true,
      () => false,
    );
    const files = [...(hasExecuted ? [{ path: "executed.ipynb", file: executedPath }] : []), ...outputs];
    if (files.length === 0) return 0;
    const answer = await this.#client.post<{ urls: UploadTarget[] }>(`${base}/uploads`, {
      ...lease,
      paths: files.map((f) => f.path),
    });
    for (const [i, target] of answer!.urls.entries()) await uploadFrom(files[i]!.file, target);
    return files.length;
  }

  #finishBody(
    outcome: NotebookOutcome | { status: "failed"; error: JobError },
    stopReason: StopReason | null,
    timeoutS: number,
  ): { status: "succeeded" | "failed" | "cancelled"; error?: JobError } {
    const stopped = stoppedEnding(stopReason, timeoutS, "Run");
    if (stopped) return stopped;
    if (outcome.status === "succeeded") return { status: "succeeded" };
    if (outcome.status === "cancelled") return { status: "cancelled" };
    if ("retryable" in outcome.error) return { status: "failed", error: outcome.error };
    const { code, message, ...details } = outcome.error;
    return { status: "failed", error: { code, message, retryable: !PERMANENT.has(code), details } };
  }
}

function uploadError(error: unknown): JobError {
  const tooLarge = error instanceof TransferError && error.status === 413;
  return { code: "upload_failed", message: (error as Error).message, retryable: !tooLarge };
}

let settings: AgentSettings;
try {
  settings = settingsFromEnv(process.env);
} catch (error) {
  log("agent cannot start", { error: (error as Error).message });
  process.exit(2);
}
const agent = new Agent(settings);
const terminateSelf = selfTerminator(process.env);
let lifetimeUp = false;
process.on("SIGTERM", () => agent.stop());
process.on("SIGINT", () => agent.stop());
if (settings.maxLifetimeMs > 0) {
  setTimeout(() => {
    lifetimeUp = true;
    log("maximum lifetime reached; stopping", { max_lifetime_s: settings.maxLifetimeMs / 1000 });
    agent.stop();
  }, settings.maxLifetimeMs).unref();
}

/** The kill switch: whatever happens, an instance cut off from its control plane stops billing. */
async function killSwitch(why: string): Promise<void> {
  try {
    log("kill switch", { why, did: await terminateSelf() });
  } catch (error) {
    log("kill switch could not end the instance", { why, error: (error as Error).message });
  }
}

agent.run().then(
  async () => {
    if (lifetimeUp) await killSwitch("maximum lifetime reached");
    process.exit(0);
  },
  async (error: unknown) => {
    log("agent failed", { error: (error as Error).message });
    if (error instanceof ControlPlaneUnreachable) await killSwitch("control plane unreachable");
    process.exit(1);
  },
);
