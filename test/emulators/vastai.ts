import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InstanceHost } from "../../src/providers/sim/instance-host.ts";
import type { VastInstance, VastOffer } from "../../src/providers/vastai/vast-client.ts";
import { type EmulatedRequest, FaultQueue, type Reply, startEmulatorServer } from "./http.ts";

/**
 * Vast.ai's REST API (`/api/v0`) as ../shared/reference/providers.md describes it: bearer key or
 * `?api_key=`, offer search on `POST /bundles/` with a field → operator map (`eq neq gt gte lt lte
 * in notin`), `order`, `type` (`on-demand` | `bid`) and `limit`; `gpu_ram`/`cpu_ram` in MB.
 * Renting an ask (`PUT /asks/{id}/`) creates an instance whose container really runs, on this host
 * (InstanceHost), in the `args` launch mode: `onstart` as the entrypoint, `args` as its arguments.
 * Instances are shown, listed, stopped, started and destroyed under `/instances`.
 */
export const VAST_MARKET: VastOffer[] = [
  offer(7001, "RTX 4090", 1, 24_564, 0.31, 0.18, 0.995, "Norway, NO"),
  offer(7002, "RTX 4090", 2, 24_564, 0.58, 0.33, 0.97, "Texas, US"),
  offer(7003, "RTX 3090", 1, 24_576, 0.16, 0.09, 0.91, "Quebec, CA"),
  offer(7004, "H100 SXM", 8, 81_559, 17.6, 11.2, 0.999, "Oregon, US"),
  offer(7005, "A100 PCIE", 1, 40_960, 0.72, 0.4, 0.98, "Sweden, SE"),
  { ...offer(7006, "RTX 4090", 1, 24_564, 0.25, 0.12, 0.99, "Poland, PL"), rented: true },
];

function offer(
  id: number,
  gpuName: string,
  numGpus: number,
  gpuRamMb: number,
  dphTotal: number,
  minBid: number,
  reliability: number,
  geolocation: string,
): VastOffer {
  return {
    id,
    machine_id: id * 10,
    host_id: id * 100,
    gpu_name: gpuName,
    num_gpus: numGpus,
    gpu_ram: gpuRamMb,
    cpu_cores: 16 * numGpus,
    cpu_ram: 64_000 * numGpus,
    dph_total: dphTotal,
    min_bid: minBid,
    reliability,
    geolocation,
    rentable: true,
    rented: false,
  };
}

/** An instance as the emulator shows it: what the client reads, and more of Vast's fields. */
export interface EmulatedVastInstance extends VastInstance {
  num_gpus: number;
  gpu_name: string;
  is_bid: boolean;
  public_ipaddr: string | null;
  ssh_host: string | null;
  ssh_port: number | null;
  ports: Record<string, { HostPort: string }[]> | null;
  /** Epoch seconds. */
  start_date: number;
  reliability2: number | null;
}

export interface VastEmulator {
  url: string;
  apiKey: string;
  market: VastOffer[];
  faults: FaultQueue;
  /** Search bodies received, in order. */
  searches: Record<string, unknown>[];
  /** `PUT /asks/{id}/` bodies received, in order. */
  creates: Record<string, unknown>[];
  /** Live instances by id, as `GET /instances/{id}/` shows them. */
  instances: Map<number, EmulatedVastInstance>;
  /** Where each instance's container runs: `host.pathOf(id)` is its disk. */
  host: InstanceHost;
  /** The next `PUT /asks/{id}/` finds the ask taken, as when someone rents it first. */
  refuseNextLaunch(): void;
  /** The next container to start fails to be created (`created`, `OCI runtime create failed…`). */
  failNextBoot(): void;
  /** Outbids the instance: its container is halted and the contract left in Vast's outbid state. */
  preempt(id: number | string): Promise<void>;
  /** Halts every container, stops the server and removes the instances' folders. */
  close(): Promise<void>;
}

const OPERATORS: Record<string, (field: unknown, operand: unknown) => boolean> = {
  eq: (a, b) => a === b,
  neq: (a, b) => a !== b,
  gt: (a, b) => (a as number) > (b as number),
  gte: (a, b) => (a as number) >= (b as number),
  lt: (a, b) => (a as number) < (b as number),
  lte: (a, b) => (a as number) <= (b as number),
  in: (a, b) => (b as unknown[]).includes(a),
  notin: (a, b) => !(b as unknown[]).includes(a),
};
const NOT_FILTERS = new Set(["order", "type", "limit", "allocated_storage"]);

/** Storage a rented instance's disk adds to the machine's price (the emulator's figure; Vast's own formula is not confirmed). */
const STORAGE_USD_PER_GB_MONTH = 0.1;
const HOURS_PER_MONTH = 730;
/** What Docker says when a container cannot be created; Vast passes it on in `status_msg`. */
const OCI_FAILURE =
  "Error response from daemon: failed to create task for container: failed to create shim task: " +
  "OCI runtime create failed: runc create failed: unable to start container process: error during container init";

/** An instance's container: what it runs, with what environment, and its pending start. */
interface Container {
  askId: number;
  /** The `sh -c` line Docker's exec of entrypoint and arguments amounts to; null without an entrypoint. */
  command: string | null;
  env: Record<string, string>;
  boot: NodeJS.Timeout | null;
}

interface CreateBody {
  image?: unknown;
  disk?: unknown;
  label?: unknown;
  env?: unknown;
  onstart?: unknown;
  runtype?: unknown;
  args?: unknown;
  price?: unknown;
}

/**
 * `bootDelayMs`: how long a container takes from `loading` to `running` (an image pull on a real
 * host takes minutes).
 */
export async function startVastEmulator(
  apiKey = "vast_test_key",
  options: { bootDelayMs?: number } = {},
): Promise<VastEmulator> {
  const bootDelayMs = options.bootDelayMs ?? 200;
  const market = structuredClone(VAST_MARKET);
  const faults = new FaultQueue();
  const searches: Record<string, unknown>[] = [];
  const creates: Record<string, unknown>[] = [];
  const instances = new Map<number, EmulatedVastInstance>();
  const containers = new Map<number, Container>();
  /** Instance-scoped keys (`CONTAINER_API_KEY`): each may act on its own instance only. */
  const instanceKeys = new Map<string, number>();
  const root = await mkdtemp(join(tmpdir(), "hangar-vast-"));
  const host = new InstanceHost(root);
  let nextContract = 7_835_610;
  let refuseNextLaunch = false;
  let failNextBoot = false;

  const noSuchInstance = (reply: Reply, id: string) =>
    reply(404, { success: false, error: "no_such_instance", msg: `Instance ${id} not found.` });

  /** The container comes up after the boot delay, running its command on the InstanceHost. */
  function start(id: number): void {
    const instance = instances.get(id)!;
    const container = containers.get(id)!;
    Object.assign(instance, { actual_status: "loading", status_msg: "Pulling image", ...wants("running") });
    container.boot = setTimeout(() => {
      container.boot = null;
      const fail = (statusMsg: string) =>
        Object.assign(instance, { actual_status: "created", status_msg: statusMsg });
      if (container.command === null) return fail("Error response from daemon: No command specified");
      if (failNextBoot) {
        failNextBoot = false;
        return fail(OCI_FAILURE);
      }
      Object.assign(instance, {
        actual_status: "running",
        status_msg: `success, running ${instance.gpu_name}`,
        public_ipaddr: "203.0.113.10",
      });
      host.boot(String(id), container.command, container.env);
    }, bootDelayMs);
  }

  /** Halts the container and leaves the contract stopped, as a stop by request and an outbid both do. */
  async function halt(id: number, statusMsg: string): Promise<void> {
    const container = containers.get(id)!;
    if (container.boot) clearTimeout(container.boot);
    container.boot = null;
    Object.assign(instances.get(id)!, {
      actual_status: "exited",
      status_msg: statusMsg,
      public_ipaddr: null,
      ...wants("stopped"),
    });
    await host.halt(String(id));
  }

  /** A running container whose command has ended is `exited`, though its contract still wants it running. */
  function observe(instance: EmulatedVastInstance): EmulatedVastInstance {
    if (instance.actual_status === "running" && !host.isRunning(String(instance.id))) {
      instance.actual_status = "exited";
      instance.status_msg = `Exited (${host.exitOf(String(instance.id))?.code ?? 137})`;
    }
    return instance;
  }

  function create(askId: string, request: EmulatedRequest, reply: Reply) {
    let body: CreateBody;
    try {
      body = JSON.parse(request.body);
    } catch {
      return reply(400, { success: false, error: "invalid_request", msg: "Body is not JSON" });
    }
    creates.push(body as Record<string, unknown>);
    const ask = market.find((candidate) => String(candidate.id) === askId);
    // Unconfirmed: the status and body of an ask that is gone or taken (404 no_such_ask here).
    if (refuseNextLaunch || !ask || ask.rented || !ask.rentable) {
      refuseNextLaunch = false;
      return reply(404, {
        success: false,
        error: "no_such_ask",
        msg: `Instance type by id ${askId} is not available.`,
      });
    }
    const invalid = invalidCreate(body);
    if (invalid) return reply(400, { success: false, error: "invalid_args", msg: invalid });
    const env = (body.env ?? {}) as Record<string, string>;
    const args = (body.args ?? []) as string[];
    const price = (body.price ?? null) as number | null;
    const disk = Number(body.disk ?? 8);
    const id = nextContract++;
    const instanceKey = `vast_instance_${id}_${Math.random().toString(36).slice(2)}`;
    ask.rented = true;
    instances.set(id, {
      id,
      machine_id: ask.machine_id,
      actual_status: null,
      ...wants("running"),
      status_msg: null,
      label: typeof body.label === "string" ? body.label : null,
      dph_total: (price ?? ask.dph_total) + (disk * STORAGE_USD_PER_GB_MONTH) / HOURS_PER_MONTH,
      is_bid: price !== null,
      num_gpus: ask.num_gpus,
      gpu_name: ask.gpu_name,
      public_ipaddr: null,
      ssh_host: null,
      ssh_port: null,
      ports: {},
      start_date: Math.floor(Date.now() / 1000),
      reliability2: ask.reliability,
    });
    instanceKeys.set(instanceKey, id);
    containers.set(id, {
      askId: ask.id,
      // Docker runs the entrypoint (`onstart` in the args launch mode) with `args` as its arguments.
      command:
        typeof body.onstart === "string" && body.onstart !== "" ? execLine([body.onstart, ...args]) : null,
      env: {
        // Docker flags ride in `env` as keys (`"-p 8000:8000": "1"`); they are not variables.
        ...Object.fromEntries(Object.entries(env).filter(([key]) => !key.startsWith("-"))),
        // What Vast sets in every container, as users' scripts read it (not in Vast's reference):
        // the instance's id, its label, and a key scoped to the instance (enough to stop or destroy it).
        CONTAINER_ID: String(id),
        VAST_CONTAINERLABEL: `C.${id}`,
        CONTAINER_API_KEY: instanceKey,
      },
      boot: null,
    });
    if (price !== null && price < (ask.min_bid ?? 0)) {
      // Vast creates a bid below the minimum stopped, and answers an error that still names it.
      // Unconfirmed: the status (200 here), the error code and the message.
      Object.assign(instances.get(id)!, { status_msg: "Bid below the current minimum", ...wants("stopped") });
      return reply(200, {
        success: false,
        error: "bid_too_low",
        msg: `Your bid of $${price}/hr is below the minimum bid of $${ask.min_bid}/hr; the instance was created stopped.`,
        new_contract: id,
      });
    }
    start(id);
    reply(200, { success: true, new_contract: id });
  }

  async function changeState(id: number, request: EmulatedRequest, reply: Reply): Promise<void> {
    let state: unknown;
    try {
      state = (JSON.parse(request.body) as { state?: unknown }).state;
    } catch {
      return reply(400, { success: false, error: "invalid_request", msg: "Body is not JSON" });
    }
    const instance = instances.get(id)!;
    if (state === "stopped") {
      await halt(id, "Exited (0)");
    } else if (state === "running") {
      if (instance.intended_status !== "running" || instance.cur_state !== "running") start(id);
    } else {
      return reply(400, { success: false, error: "invalid_args", msg: "state must be running or stopped" });
    }
    reply(200, { success: true });
  }

  async function destroy(id: number, reply: Reply): Promise<void> {
    await halt(id, "Destroying");
    const ask = market.find((candidate) => candidate.id === containers.get(id)!.askId);
    if (ask) ask.rented = false;
    instances.delete(id);
    containers.delete(id);
    for (const [key, owner] of instanceKeys) if (owner === id) instanceKeys.delete(key);
    reply(200, { success: true });
  }

  function search(request: EmulatedRequest, reply: Reply) {
    let search: Record<string, unknown>;
    try {
      search = JSON.parse(request.body);
    } catch {
      return reply(400, { success: false, error: "invalid_request", msg: "Body is not JSON" });
    }
    searches.push(search);
    for (const [field, condition] of Object.entries(search)) {
      if (NOT_FILTERS.has(field)) continue;
      for (const operator of Object.keys(condition as object)) {
        if (!(operator in OPERATORS)) {
          return reply(400, {
            success: false,
            error: "invalid_request",
            msg: `Unknown operator ${operator}`,
          });
        }
      }
    }
    const matching = market.filter((candidate) =>
      Object.entries(search).every(
        ([field, condition]) =>
          NOT_FILTERS.has(field) ||
          Object.entries(condition as Record<string, unknown>).every(([operator, operand]) =>
            OPERATORS[operator]!(candidate[field as keyof VastOffer], operand),
          ),
      ),
    );
    const [[orderField, direction] = ["dph_total", "asc"]] = (search.order as [string, string][]) ?? [];
    matching.sort((a, b) => {
      const delta = Number(a[orderField as keyof VastOffer]) - Number(b[orderField as keyof VastOffer]);
      return direction === "desc" ? -delta : delta;
    });
    reply(200, { offers: matching.slice(0, Number(search.limit ?? 64)) });
  }

  const server = await startEmulatorServer(faults, async (request, reply) => {
    const path = request.url.pathname.replace(/^\/api\/v0/, "");
    const ownInstance = /^\/instances\/(\d+)\/?$/.exec(path)?.[1];
    const instanceKeyFits =
      request.key !== null &&
      ownInstance !== undefined &&
      instanceKeys.get(request.key) === Number(ownInstance);
    if (request.key !== apiKey && !instanceKeyFits) {
      return reply(401, { success: false, error: "invalid_user_key", msg: "Invalid user key" });
    }
    if (request.method === "POST" && path === "/bundles/") return search(request, reply);
    const askId = /^\/asks\/(\d+)\/?$/.exec(path)?.[1];
    if (request.method === "PUT" && askId !== undefined) return create(askId, request, reply);
    if (request.method === "GET" && /^\/instances\/?$/.test(path)) {
      return reply(200, { instances: [...instances.values()].map(observe) });
    }
    if (ownInstance !== undefined && ["GET", "PUT", "DELETE"].includes(request.method)) {
      const instance = instances.get(Number(ownInstance));
      // Unconfirmed: how Vast answers an instance it does not know (404 no_such_instance here).
      if (!instance) return noSuchInstance(reply, ownInstance);
      if (request.method === "GET") return reply(200, { instances: observe(instance) });
      if (request.method === "PUT") return changeState(instance.id, request, reply);
      return destroy(instance.id, reply);
    }
    reply(404, {
      success: false,
      error: "not_found",
      msg: `No route ${request.method} ${request.url.pathname}`,
    });
  });

  return {
    url: `${server.origin}/api/v0`,
    apiKey,
    market,
    faults,
    searches,
    creates,
    instances,
    host,
    refuseNextLaunch: () => {
      refuseNextLaunch = true;
    },
    failNextBoot: () => {
      failNextBoot = true;
    },
    preempt: async (id) => {
      // The documented outbid state: the contract's three states all stopped.
      await halt(Number(id), "Instance stopped: outbid");
    },
    close: async () => {
      for (const container of containers.values()) if (container.boot) clearTimeout(container.boot);
      await host.haltAll();
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** The contract's three states, set together. */
function wants(state: "running" | "stopped") {
  return { cur_state: state, intended_status: state, next_state: state };
}

/** Why Vast would refuse the create body, or null. Only the `args` launch mode is emulated. */
function invalidCreate(body: CreateBody): string | null {
  if (typeof body.image !== "string" || body.image === "") return "image is required";
  if (body.runtype !== "args")
    return `the emulator runs the args launch mode only, not ${String(body.runtype)}`;
  const env = body.env ?? {};
  if (
    typeof env !== "object" ||
    Array.isArray(env) ||
    Object.values(env).some((v) => typeof v !== "string")
  ) {
    return "env must be an object of strings";
  }
  const args = body.args ?? [];
  if (!Array.isArray(args) || args.some((arg) => typeof arg !== "string"))
    return "args must be a list of strings";
  if (body.price !== undefined && body.price !== null && typeof body.price !== "number") {
    return "price must be a number or null";
  }
  return null;
}

/** A shell line that runs `argv` exactly, as Docker's exec of entrypoint and arguments does. */
function execLine(argv: string[]): string {
  return `exec ${argv.map((word) => `'${word.replaceAll("'", `'\\''`)}'`).join(" ")}`;
}
