import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { HangarClient } from "../../src/cli/client.ts";
import { REPO_ROOT } from "../../src/server/server.ts";

export const TEST_API_KEY = "hgr_test_key_0123456789";

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Settings that make failures show up in seconds instead of minutes. */
export const FAST_ENV = {
  HANGAR_LEASE_S: "3",
  HANGAR_HEARTBEAT_S: "1",
  HANGAR_SCHEDULER_INTERVAL_MS: "100",
  HANGAR_IDLE_TIMEOUT_S: "30",
  HANGAR_SHUTDOWN_GRACE_S: "2",
  HANGAR_LOG_LEVEL: "warn",
};

export interface ServerProcess {
  url: string;
  dataDir: string;
  client: HangarClient;
  process: ChildProcess;
  output: () => string;
  /** Starts the same server again (same port, data and database), e.g. after kill(). */
  restart(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A real `hangar server` child process, as a user would run it. */
export async function spawnServer(
  env: Record<string, string> = {},
  options: { dataDir?: string } = {},
): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "hangar-e2e-")));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let log = "";
  const start = async () => {
    const child = spawn(process.execPath, [join(REPO_ROOT, "src/cli/main.ts"), "server"], {
      env: {
        ...process.env,
        ...FAST_ENV,
        HANGAR_PORT: String(port),
        HANGAR_DATA_DIR: dataDir,
        HANGAR_BOOTSTRAP_API_KEY: TEST_API_KEY,
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (chunk: Buffer) => {
      log += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString();
    });
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${log}`);
      const healthy = await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (healthy) return child;
      await sleep(100);
    }
    child.kill("SIGKILL");
    throw new Error(`server did not become healthy:\n${log}`);
  };
  const handle: ServerProcess = {
    url,
    dataDir,
    client: new HangarClient(url, TEST_API_KEY),
    process: await start(),
    output: () => log,
    async restart() {
      handle.process = await start();
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const child = handle.process;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(signal);
      await exited;
    },
  };
  return handle;
}

/** Stops the server gracefully (its agents with it) and removes its data. */
export async function stopServer(server: ServerProcess): Promise<void> {
  await server.kill("SIGTERM");
  await killAgentsOf(server.dataDir);
  await rm(server.dataDir, { recursive: true, force: true });
}

/** Agents outlive a killed server by design; tests end the ones they started. */
export async function killAgentsOf(dataDir: string): Promise<void> {
  const { readdir, readFile } = await import("node:fs/promises");
  for (const pid of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const environ = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    if (environ.includes("HANGAR_INSTANCE_ID=") && environ.includes(`HANGAR_WORK_DIR=${dataDir}`)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 60_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
