import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * The machines behind a simulated cloud (the `sim` provider) and the tests' emulated ones: booting an
 * instance runs the launch's own bootstrap command (`sh -c`) on this host, in a folder of its own
 * that stands for the instance's disk, with the environment the provider would give it. So launch →
 * agent registers → job runs → terminate goes through Hangar's real bootstrap command and agent.
 */
export class InstanceHost {
  readonly #root: string;
  readonly #processes = new Map<string, ChildProcess>();
  readonly #exits = new Map<string, { code: number | null; signal: string | null }>();

  constructor(root: string) {
    this.#root = root;
  }

  /** Starts the instance's boot command; its output goes to `<root>/<id>/boot.log`. */
  boot(id: string, command: string, env: Record<string, string>): void {
    const disk = join(this.#root, id);
    mkdirSync(join(disk, "tmp"), { recursive: true });
    const log = openSync(join(disk, "boot.log"), "a");
    const child = spawn("sh", ["-c", command], {
      cwd: disk,
      env: {
        // The image's own PATH; Node 24 first, as the default image ships it.
        PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
        HOME: disk,
        TMPDIR: join(disk, "tmp"),
        ...env,
      },
      stdio: ["ignore", log, log],
      detached: true,
    });
    closeSync(log);
    this.#processes.set(id, child);
    child.once("exit", (code, signal) => {
      this.#exits.set(id, { code, signal });
      this.#processes.delete(id);
    });
    child.unref();
  }

  isRunning(id: string): boolean {
    return this.#processes.has(id);
  }

  /** How the instance's boot command ended, if it did. */
  exitOf(id: string): { code: number | null; signal: string | null } | undefined {
    return this.#exits.get(id);
  }

  /** Ends everything the instance started (its process group), as powering the machine off would. */
  async halt(id: string): Promise<void> {
    const child = this.#processes.get(id);
    if (!child?.pid) return;
    // Held while it winds down: an unreferenced child's exit would not keep this process waiting.
    child.ref();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    signalGroup(child.pid, "SIGTERM");
    const timer = setTimeout(() => signalGroup(child.pid!, "SIGKILL"), 3_000);
    await exited;
    clearTimeout(timer);
    // Whatever the agent started (a notebook kernel) dies with the machine.
    signalGroup(child.pid, "SIGKILL");
  }

  async haltAll(): Promise<void> {
    await Promise.all([...this.#processes.keys()].map((id) => this.halt(id)));
  }

  pathOf(id: string): string {
    return join(this.#root, id);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}
