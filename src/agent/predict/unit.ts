import { rm } from "node:fs/promises";
import { basename, join } from "node:path";
import type { PredictionAssignment, PredictionItem, UploadTarget } from "../../app/agent-hub.ts";
import type { JobError } from "../../domain/job.ts";
import type { JsonObject } from "../../domain/json.ts";
import type { CommandSpec, ModelRunner, PredictionContext, PredictionResult } from "../../models/model.ts";
import { modelEnv } from "../child-env.ts";
import { type ControlPlaneClient, ControlPlaneError } from "../control-plane-client.ts";
import { type AttemptLog, LogShipper, type LogShipperEntry } from "../log-shipper.ts";
import { type StopReason, stoppedEnding } from "../stop-reasons.ts";
import { downloadTo, uploadFrom } from "../transfer.ts";
import { runModelProcess } from "./process.ts";

interface FinishBody {
  status: "succeeded" | "failed" | "cancelled";
  error?: JobError;
  result?: JsonObject;
  score?: number;
}

/** A child ended and waiting to be reported, with the log lines it had not shipped. */
interface FinishReport {
  item: PredictionItem;
  body: FinishBody;
  entries: LogShipperEntry[];
}

/** The prepared target of the batch an instance is working on, kept between work units. */
interface PreparedTarget {
  key: string;
  context: PredictionContext;
}

/**
 * Runs a work unit down the one path every model shares: check the model is installed, prepare the
 * shared target once per batch, pack inputs onto processes (`perProcess` each, `parallel` side by
 * side), parse each process's outputs, upload structures and finish each child on its own lease.
 */
export class PredictionUnitRunner {
  readonly #client: ControlPlaneClient;
  readonly #workRoot: string;
  readonly #heartbeatS: number;
  readonly #runners: ReadonlyMap<string, ModelRunner>;
  readonly #cores: number;
  #prepared: PreparedTarget | null = null;

  constructor(
    client: ControlPlaneClient,
    options: {
      workRoot: string;
      heartbeatS: number;
      runners: ReadonlyMap<string, ModelRunner>;
      /** Cores this agent may use: all of the instance's, or its share of a host it shares. */
      cores: number;
    },
  ) {
    this.#cores = options.cores;
    this.#client = client;
    this.#workRoot = options.workRoot;
    this.#heartbeatS = options.heartbeatS;
    this.#runners = options.runners;
  }

  async run(unit: PredictionAssignment, shutdown: AbortSignal): Promise<void> {
    const open = new Map(unit.items.map((item) => [item.job_id, item]));
    // Leases are heartbeated until the control plane has the child's outcome, not only while it runs:
    // a report delayed by a server restart must not let the lease lapse and the child run again.
    const unreported = new Map(open);
    // One shipper for the unit: its children's lines travel together, one request every half second.
    const shipper = new LogShipper(this.#client);
    const logs = new Map(unit.items.map((item) => [item.job_id, shipper.open(item)]));
    // Per job: why it must stop (cancel, lease lost, timeout, shutdown), and a signal for its process.
    const stops = new Map(unit.items.map((item) => [item.job_id, new AbortController()]));
    const reasons = new Map<string, StopReason>();
    const stop = (jobId: string, reason: StopReason) => {
      if (!reasons.has(jobId)) reasons.set(jobId, reason);
      stops.get(jobId)?.abort();
    };
    const onShutdown = () => {
      for (const id of open.keys()) stop(id, "shutdown");
    };
    shutdown.addEventListener("abort", onShutdown);
    const heartbeat = setInterval(() => void this.#beat(unreported, stop), this.#heartbeatS * 1000);
    const timeout = setTimeout(() => {
      for (const id of open.keys()) stop(id, "timeout");
    }, unit.timeout_s * 1000);
    // Ended children wait here and are reported together: one request per process's group, not two per child.
    let reports: FinishReport[] = [];
    const finish = async (item: PredictionItem, body: FinishBody) => {
      if (!open.delete(item.job_id)) return;
      const reason = reasons.get(item.job_id);
      const log = logs.get(item.job_id)!;
      if (reason === "lease_lost") {
        unreported.delete(item.job_id);
        return;
      }
      if (reason === "shutdown") {
        await shipper.flush().catch(() => undefined);
        await this.#client
          .post(`/agent/v1/jobs/${item.job_id}/release`, { lease_token: item.lease_token })
          .catch((error) => {
            if (!(error instanceof ControlPlaneError && error.status === 409)) throw error;
          })
          .finally(() => unreported.delete(item.job_id));
        return;
      }
      const ended = stoppedEnding(reason, unit.timeout_s, "Prediction") ?? body;
      log.line(
        `finished: ${ended.status}${ended.error ? ` (${ended.error.code}: ${ended.error.message})` : ""}`,
      );
      reports.push({ item, body: ended, entries: await log.take() });
    };
    const report = async () => {
      const sending = reports;
      reports = [];
      if (sending.length === 0) return;
      // A lease lost meanwhile answers lease_lost for that item alone: its job moved on without us.
      try {
        await this.#client.post("/agent/v1/finish", {
          items: sending.map(({ item, body, entries }) => ({
            job_id: item.job_id,
            lease_token: item.lease_token,
            ...body,
            logs: { attempt: item.attempt, entries },
          })),
        });
      } finally {
        for (const { item } of sending) unreported.delete(item.job_id);
      }
    };

    try {
      const runner = this.#runners.get(unit.model);
      const missing = runner
        ? await runner.checkInstalled(process.env)
        : `this agent does not know the model "${unit.model}"`;
      if (!runner || missing) {
        for (const item of unit.items) {
          logs.get(item.job_id)!.line(`model ${unit.model} cannot run here: ${missing}`);
          await finish(item, {
            status: "failed",
            error: { code: "model_not_installed", message: missing!, retryable: false },
          });
        }
        await report();
        return;
      }
      for (const item of unit.items) {
        logs.get(item.job_id)!.line(`${unit.model}: predicting ${item.input.name} (${item.input.smiles})`);
      }
      let context: PredictionContext;
      try {
        context = await this.#target(unit, runner);
      } catch (error) {
        for (const item of unit.items) {
          await finish(item, {
            status: "failed",
            error: { code: "target_preparation_failed", message: (error as Error).message, retryable: false },
          });
        }
        await report();
        return;
      }
      const groups = chunk(unit.items, runner.spec.packing.perProcess);
      const { parallel: declared } = runner.spec.packing;
      const parallel = declared === "cores" ? this.#cores : declared;
      let next = 0;
      const lane = async () => {
        for (let group = groups[next++]; group; group = groups[next++]) {
          await this.#runGroup(runner, context, group, { logs, stops, stop, finish });
          await report();
        }
      };
      await Promise.all(Array.from({ length: Math.min(parallel, groups.length) }, lane));
    } finally {
      clearInterval(heartbeat);
      clearTimeout(timeout);
      shutdown.removeEventListener("abort", onShutdown);
      for (const item of [...open.values()]) {
        await finish(item, {
          status: "failed",
          error: {
            code: "agent_error",
            message: "The agent ended this prediction unexpectedly",
            retryable: true,
          },
        }).catch(() => undefined);
      }
      await report().catch(() => undefined);
      await shipper.close().catch(() => undefined);
    }
  }

  /** Downloads and prepares the unit's target, or reuses the one prepared for the same batch. */
  async #target(unit: PredictionAssignment, runner: ModelRunner): Promise<PredictionContext> {
    const key = `${unit.model}:${unit.batch_id ?? unit.items[0]!.job_id}`;
    if (this.#prepared?.key === key) return this.#prepared.context;
    // One batch's files at a time: the previous target's folder (receptor, poses) goes first.
    if (this.#prepared) await rm(this.#prepared.context.workDir, { recursive: true, force: true });
    this.#prepared = null;
    const workDir = join(this.#workRoot, `predict-${unit.batch_id ?? unit.items[0]!.job_id}`);
    const { parallel } = runner.spec.packing;
    const context: PredictionContext = {
      workDir,
      parameters: unit.parameters,
      env: modelEnv(process.env, parallel === "cores" ? 1 : Math.floor(this.#cores / parallel)),
      ...(unit.target.protein_sequence ? { proteinSequence: unit.target.protein_sequence } : {}),
    };
    if (unit.target.receptor) {
      context.receptorPath = join(workDir, "target", basename(unit.target.receptor.name));
      await downloadTo(unit.target.receptor.url, context.receptorPath);
    }
    if (unit.target.msa) {
      context.msaPath = join(workDir, "msa", basename(unit.target.msa.name));
      await downloadTo(unit.target.msa.url, context.msaPath);
    }
    await runner.prepareShared(context);
    this.#prepared = { key, context };
    return context;
  }

  async #runGroup(
    runner: ModelRunner,
    context: PredictionContext,
    group: PredictionItem[],
    unit: {
      logs: Map<string, AttemptLog>;
      stops: Map<string, AbortController>;
      stop: (jobId: string, reason: StopReason) => void;
      finish: (item: PredictionItem, body: FinishBody) => Promise<void>;
    },
  ): Promise<void> {
    const live = group.filter((item) => !unit.stops.get(item.job_id)!.signal.aborted);
    for (const item of group) if (!live.includes(item)) await unit.finish(item, { status: "cancelled" });
    if (live.length === 0) return;
    const inputs = live.map((item) => item.input);
    const byInput = new Map(live.map((item) => [item.input.id, item]));
    const report = async (result: PredictionResult) => {
      const item = byInput.get(result.inputId);
      if (!item) return;
      let body: FinishBody;
      try {
        body = await this.#finishBody(item, result, runner);
      } catch (error) {
        // This child's lease is gone (it lapsed and the job moved on): it alone is dropped, and its
        // unit-mates' results are still reported, instead of the agent failing the whole unit.
        if (!(error instanceof ControlPlaneError && error.code === "lease_lost")) throw error;
        unit.stop(item.job_id, "lease_lost");
        body = { status: "cancelled" };
      }
      await unit.finish(item, body);
    };
    const prepared = await runner.prepare(inputs, context);
    for (const failure of prepared.failed) await report(failure);
    if (!prepared.command) return;
    const command: CommandSpec = prepared.command;
    const running = command.inputIds.map((id) => byInput.get(id)).filter((item) => item !== undefined);
    // The process stops when every job it serves has been told to stop.
    const processStop = new AbortController();
    for (const item of running) {
      unit.stops.get(item.job_id)!.signal.addEventListener("abort", () => {
        if (running.every((i) => unit.stops.get(i.job_id)!.signal.aborted)) processStop.abort();
      });
    }
    for (const item of running) unit.logs.get(item.job_id)!.line(`$ ${command.argv.join(" ")}`);
    const exit = await runModelProcess(command, {
      env: context.env,
      signal: processStop.signal,
      onLine: (stream, line) => {
        for (const item of running) unit.logs.get(item.job_id)!.write(stream, `${line}\n`);
      },
    });
    const results = await runner.parse(
      running.map((item) => item.input),
      context,
      exit,
    );
    for (const result of results) await report(result);
  }

  /** Uploads a result's structure files beside the job and turns the result into a finish body. */
  async #finishBody(
    item: PredictionItem,
    result: PredictionResult,
    runner: ModelRunner,
  ): Promise<FinishBody> {
    if (result.status === "failed") {
      const error = result.error ?? { code: "prediction_failed", message: "The model gave no details" };
      return { status: "failed", error: { ...error, retryable: false } };
    }
    const base = `/agent/v1/jobs/${item.job_id}`;
    const names = uniqueNames(result.structures.map((s) => basename(s.path)));
    const paths = names.map((name) => `output/${name}`);
    if (paths.length > 0) {
      const answer = await this.#client.post<{ urls: UploadTarget[] }>(`${base}/uploads`, {
        lease_token: item.lease_token,
        paths,
      });
      for (const [i, target] of answer!.urls.entries()) await uploadFrom(result.structures[i]!.path, target);
    }
    const { spec } = runner;
    return {
      status: "succeeded",
      ...(result.score !== undefined ? { score: result.score } : {}),
      result: {
        ligand: { name: item.input.name, smiles: item.input.smiles },
        score: result.score ?? null,
        score_name: spec.score.name,
        unit: spec.score.unit,
        better: spec.score.better,
        confidence: result.confidence,
        details: result.details,
        structures: result.structures.map((s, i) => ({ path: paths[i]!, format: s.format, role: s.role })),
        model: spec.name,
        model_version: spec.version,
      },
    };
  }

  async #beat(
    open: Map<string, PredictionItem>,
    stop: (jobId: string, reason: "cancel" | "lease_lost") => void,
  ): Promise<void> {
    if (open.size === 0) return;
    try {
      const answer = await this.#client.post<{ cancel: string[]; lost: string[] }>("/agent/v1/heartbeats", {
        leases: [...open.values()].map((item) => ({ job_id: item.job_id, lease_token: item.lease_token })),
      });
      for (const id of answer?.cancel ?? []) stop(id, "cancel");
      for (const id of answer?.lost ?? []) stop(id, "lease_lost");
    } catch {
      // The client retries through restarts; a beat that still fails is made up by the next one.
    }
  }
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const groups: T[][] = [];
  for (let i = 0; i < items.length; i += Math.max(1, size))
    groups.push(items.slice(i, i + Math.max(1, size)));
  return groups;
}

/** File names as uploaded: two structures with one base name must not overwrite each other. */
function uniqueNames(names: string[]): string[] {
  const seen = new Set<string>();
  return names.map((name) => {
    let candidate = name;
    for (let n = 2; seen.has(candidate); n++) candidate = `${n}-${name}`;
    seen.add(candidate);
    return candidate;
  });
}
