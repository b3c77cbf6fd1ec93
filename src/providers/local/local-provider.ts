import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { availableParallelism, hostname, totalmem } from "node:os";
import { join } from "node:path";
import { AGENT_PID_ENV } from "../../agent/child-env.ts";
import type { GpuAssignment } from "../../domain/instance.ts";
import { canonicalGpu, type Offer, type OfferQuery } from "../../domain/offers.ts";
import { hasLabels, type ListedInstance, labelsAsEnv, labelsFromEnv } from "../../domain/reconcile.ts";
import type {
  ComputeProvider,
  LaunchResult,
  LaunchSpec,
  ProviderCapabilities,
  ProviderInstanceStatus,
} from "../provider.ts";

export interface LocalProviderOptions {
  /** Command that starts the agent, e.g. [process.execPath, "dist/agent.mjs"]. */
  agentCommand: string[];
  maxInstances: number;
  gpus: GpuAssignment[];
  /** Each instance's working directory and log file live here. */
  workRoot: string;
  /** Extra environment for every agent (HANGAR_PYTHON, …). */
  env?: Record<string, string>;
  /**
   * What this host charges per hour, so a deployment on its own hardware can bill: `cpu` for one CPU
   * instance, and per GPU by Hangar's GPU name. Absent: free.
   */
  prices?: Record<string, number>;
}

/**
 * This computer as a compute provider: each instance is an agent child process. Its id is
 * `host:pid`, so a restarted server can tell its surviving agents from another host's.
 * Agents write to a log file, not a pipe, so they outlive a crashed server and reconnect to it.
 */
export class LocalProvider implements ComputeProvider {
  readonly name = "local";
  readonly capabilities: ProviderCapabilities;
  readonly maxInstances: number;
  readonly #options: LocalProviderOptions;
  readonly #children = new Map<string, ChildProcess>();
  readonly #exitListeners: ((providerInstanceId: string, reason: string) => void)[] = [];

  constructor(options: LocalProviderOptions) {
    this.#options = options;
    this.maxInstances = options.maxInstances;
    this.capabilities = {
      gpus: options.gpus.length > 0,
      listsPerHost: true,
      launchesOffers: false,
      stopResume: false,
      bootTimeoutMs: 120_000,
      reportsSpend: false,
    };
  }

  /** This machine at its configured prices: one offer per GPU type it has, or one CPU offer. */
  async offers(_query: OfferQuery): Promise<Offer[]> {
    const common = {
      provider: this.name,
      vcpus: availableParallelism(),
      memoryGb: Math.floor(totalmem() / 1024 ** 3),
      region: "local",
      spot: false,
      reliability: null,
      fetchedAt: Date.now(),
    };
    const byType = Map.groupBy(this.#options.gpus, (gpu) => gpu.name);
    if (byType.size === 0) {
      return [
        {
          ...common,
          id: hostname(),
          gpu: "CPU",
          gpuCount: 0,
          gpuMemoryGb: 0,
          pricePerHour: this.#cpuPrice(),
        },
      ];
    }
    return [...byType.entries()].map(([name, gpus]) => {
      const gpuMemoryGb = Math.round(gpus[0]!.memoryMiB / 1024);
      const gpu = canonicalGpu(name, gpuMemoryGb);
      return {
        ...common,
        id: `${hostname()}:${name}`,
        gpu,
        gpuCount: gpus.length,
        gpuMemoryGb,
        pricePerHour: (this.#options.prices?.[gpu] ?? 0) * gpus.length,
      };
    });
  }

  #cpuPrice(): number {
    return this.#options.prices?.cpu ?? 0;
  }

  /** An instance with GPUs costs their prices; one without, the CPU price. */
  #priceOf(gpus: readonly GpuAssignment[]): number {
    if (gpus.length === 0) return this.#cpuPrice();
    return gpus.reduce(
      (sum, gpu) =>
        sum + (this.#options.prices?.[canonicalGpu(gpu.name, Math.round(gpu.memoryMiB / 1024))] ?? 0),
      0,
    );
  }

  allocateGpus(count: number, inUse: ReadonlySet<number>): GpuAssignment[] {
    if (count <= 0) return [];
    const free = this.#options.gpus.filter((gpu) => !inUse.has(gpu.index));
    return free.slice(0, count);
  }

  async launch(spec: LaunchSpec): Promise<LaunchResult> {
    const workDir = join(this.#options.workRoot, spec.instanceId);
    mkdirSync(workDir, { recursive: true });
    const logFd = openSync(join(workDir, "agent.log"), "a");
    const [command, ...args] = this.#options.agentCommand;
    const gpuEnv =
      spec.gpus.length > 0
        ? { CUDA_VISIBLE_DEVICES: spec.gpus.map((g) => g.index).join(",") }
        : { CUDA_VISIBLE_DEVICES: "" };
    const child = spawn(command!, args, {
      cwd: workDir,
      env: {
        ...inheritedEnv(process.env),
        ...this.#options.env,
        ...spec.agentEnv,
        ...gpuEnv,
        // Agents on one host share its cores: each runs its share of side-by-side model processes.
        HANGAR_AGENT_CORES: String(Math.max(1, Math.floor(availableParallelism() / this.maxInstances))),
        HANGAR_WORK_DIR: workDir,
        ...labelsAsEnv(spec.labels),
      },
      stdio: ["ignore", logFd, logFd],
      detached: true,
    });
    closeSync(logFd);
    if (child.pid === undefined) {
      throw new Error(`Could not start the agent: ${command}`);
    }
    const providerInstanceId = `${hostname()}:${child.pid}`;
    this.#children.set(providerInstanceId, child);
    child.once("exit", (code, signal) => {
      this.#children.delete(providerInstanceId);
      const reason = signal ? `agent process killed by ${signal}` : `agent process exited with code ${code}`;
      for (const listener of this.#exitListeners) listener(providerInstanceId, reason);
    });
    child.unref();
    return { providerInstanceId, machineId: hostname(), pricePerHour: this.#priceOf(spec.gpus) };
  }

  async describe(providerInstanceId: string): Promise<ProviderInstanceStatus> {
    const pid = this.#ownPid(providerInstanceId);
    if (pid === null) return "unknown";
    return processKind(pid) === "agent" ? "running" : "gone";
  }

  async terminate(providerInstanceId: string): Promise<void> {
    const pid = this.#ownPid(providerInstanceId);
    // The agent's process group includes the notebook runner and kernel it started; they outlive an
    // agent killed with SIGKILL. Linux never reuses a pid that still names a process group, so when
    // the agent's pid is free or a zombie, the group (if any) is still ours to end. Model processes
    // lead groups of their own and are found by the agent pid they carry.
    if (pid === null || processKind(pid) === "other") return;
    const groups = [pid, ...(await modelGroupsOf(pid))];
    const signalGroups = (signal: NodeJS.Signals) => {
      for (const group of groups) {
        try {
          process.kill(-group, signal);
        } catch {
          /* that group is gone */
        }
      }
    };
    signalGroups("SIGTERM");
    setTimeout(() => signalGroups("SIGKILL"), 10_000).unref();
  }

  /** Agent processes on this host (each leads its own process group) whose labels match. */
  async list(labels: Readonly<Record<string, string>>): Promise<ListedInstance[]> {
    const pids = await readdir("/proc").catch(() => [] as string[]);
    const listed: ListedInstance[] = [];
    for (const pid of pids) {
      if (!/^\d+$/.test(pid)) continue;
      const agent = agentProcess(Number(pid));
      if (agent && hasLabels(agent.labels, labels)) {
        listed.push({ providerInstanceId: `${hostname()}:${pid}`, labels: agent.labels });
      }
    }
    return listed;
  }

  onExit(listener: (providerInstanceId: string, reason: string) => void): void {
    this.#exitListeners.push(listener);
  }

  #ownPid(providerInstanceId: string): number | null {
    const [host, pid] = providerInstanceId.split(":");
    return host === hostname() && pid ? Number(pid) : null;
  }
}

/**
 * The server's environment holds its secrets (database URL, signing secret, cloud keys), so an agent
 * gets only what a shell session needs, plus what the provider passes on purpose.
 */
const INHERITED = new Set([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TERM",
]);

function inheritedEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter(
      (entry): entry is [string, string] =>
        entry[1] !== undefined && (INHERITED.has(entry[0]) || entry[0].startsWith("LC_")),
    ),
  );
}

/** A live process as /proc shows it: its group, and its environment; null when free or a zombie. */
function liveProcess(pid: number): { pgrp: number; environ: string[] } | null {
  let stat: string;
  let environ: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    environ = readFileSync(`/proc/${pid}/environ`, "latin1");
  } catch {
    return null;
  }
  // Fields after the command name: state, ppid, pgrp, …
  const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return state === "Z" ? null : { pgrp: Number(pgrp), environ: environ.split("\0") };
}

const isAgentEnv = (environ: string[]) => environ.some((v) => v.startsWith("HANGAR_INSTANCE_ID="));

/** The labels of a live agent process that leads its own group; null for anything else. */
function agentProcess(pid: number): { labels: Record<string, string> } | null {
  const live = liveProcess(pid);
  if (live === null || live.pgrp !== pid || !isAgentEnv(live.environ)) return null;
  return { labels: labelsFromEnv(live.environ) };
}

/** The process groups of the model processes that the agent `agentPid` started, still running. */
async function modelGroupsOf(agentPid: number): Promise<number[]> {
  const marker = `${AGENT_PID_ENV}=${agentPid}`;
  const groups = new Set<number>();
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const live = liveProcess(Number(pid));
    if (live?.environ.includes(marker)) groups.add(live.pgrp);
  }
  return [...groups];
}

/**
 * What holds `pid` now: a live Hangar agent, nothing (free, or a zombie not yet reaped), or some other
 * process (a recycled pid would not carry HANGAR_INSTANCE_ID).
 */
function processKind(pid: number): "agent" | "gone" | "other" {
  const live = liveProcess(pid);
  if (live === null) return "gone";
  return isAgentEnv(live.environ) ? "agent" : "other";
}
