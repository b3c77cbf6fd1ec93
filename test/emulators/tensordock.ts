import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { InstanceHost } from "../../src/providers/sim/instance-host.ts";
import type { TensorDockLocation } from "../../src/providers/tensordock/tensordock-client.ts";
import { FaultQueue, type Reply, startEmulatorServer } from "./http.ts";

/**
 * TensorDock's v2 API as ../shared/reference/providers.md describes it: bearer token, JSON:API
 * envelopes, `GET /locations`, `POST /instances`. Not confirmed by the reference, and chosen here as
 * the client reads them: the `resources` shape of a location's GPU, the instance routes under
 * `/instances/{id}` and their answers, the statuses (`starting running stopping stopped`), the
 * `rateHourly` attribute, `cloud_init.runcmd`, and the error bodies for no capacity and a low balance.
 */
export const TENSORDOCK_LOCATIONS: TensorDockLocation[] = [
  {
    id: "loc-us-chicago-1",
    city: "Chicago",
    country: "United States",
    gpus: [
      {
        v0Name: "h100-sxm5-80gb",
        max_count: 8,
        price_per_hr: 2.2,
        resources: { max_vcpus: 128, max_ram_gb: 1024 },
      },
      {
        v0Name: "geforcertx4090-pcie-24gb",
        max_count: 4,
        price_per_hr: 0.35,
        resources: { max_vcpus: 32, max_ram_gb: 128 },
      },
    ],
  },
  {
    id: "loc-de-frankfurt-1",
    city: "Frankfurt",
    country: "Germany",
    gpus: [{ v0Name: "l40-pcie-48gb", max_count: 2, price_per_hr: 0.9, resources: null }],
  },
];

/** What TensorDock bills on top of the GPUs (USD per hour), so a VM costs more than its quote. */
export const TENSORDOCK_VCPU_HOURLY = 0.003;
export const TENSORDOCK_RAM_GB_HOURLY = 0.002;
export const TENSORDOCK_STORAGE_GB_HOURLY = 0.0001;

const IMAGES = new Set(["ubuntu2404", "ubuntu2204"]);

type VmStatus = "starting" | "running" | "stopping" | "stopped";

interface EmulatedVm {
  id: string;
  name: string;
  status: VmStatus;
  locationId: string;
  resources: unknown;
  rateHourly: number;
  /** cloud-init's runcmd entries, one script; run on the first boot only, as cloud-init does. */
  bootScript: string | null;
  booted: boolean;
  timer: NodeJS.Timeout | null;
}

export interface TensorDockEmulator {
  url: string;
  token: string;
  faults: FaultQueue;
  /** The machines behind the VMs: `host.pathOf(id)` is a VM's disk, where its boot script runs. */
  host: InstanceHost;
  /** The body of every `POST /instances`, parsed, in order. */
  createRequests: unknown[];
  /** The next `POST /instances` finds no capacity. */
  refuseNextLaunch(): void;
  /** The organisation's balance in USD (100 at first); under $1 TensorDock creates nothing. */
  setBalance(usd: number): void;
  /** Halts every VM's processes and removes the emulator's files. */
  close(): Promise<void>;
}

export async function startTensorDockEmulator(
  token = "td_test_token",
  options: { bootDelayMs?: number } = {},
): Promise<TensorDockEmulator> {
  const bootDelayMs = options.bootDelayMs ?? 200;
  const root = mkdtempSync(join(tmpdir(), "hangar-tensordock-"));
  const host = new InstanceHost(join(root, "vms"));
  const bin = installPoweroff(root);
  const faults = new FaultQueue();
  const vms = new Map<string, EmulatedVm>();
  const createRequests: unknown[] = [];
  let refuseNext = false;
  let balance = 100;

  /** After the delay a starting VM runs; its first boot runs the boot script. */
  const bootLater = (vm: EmulatedVm) => {
    vm.timer = setTimeout(() => {
      vm.timer = null;
      vm.status = "running";
      if (vm.booted || vm.bootScript === null) return;
      vm.booted = true;
      // The image's PATH, with a `poweroff` that powers off this emulated VM, not the test machine.
      host.boot(vm.id, vm.bootScript, {
        PATH: `${bin}:${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
      });
    }, bootDelayMs);
  };

  /** A VM whose processes ran `poweroff` is stopped, as TensorDock shows a VM powered off from inside. */
  const refresh = (vm: EmulatedVm) => {
    if (vm.status === "running" && existsSync(poweredOffMark(host, vm.id))) vm.status = "stopped";
    return vm;
  };

  const create = (body: string, reply: Reply) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return refuse(reply, 400, "Bad Request", "The body is not JSON");
    }
    createRequests.push(parsed);
    const request = validCreate(parsed);
    if (typeof request === "string") return refuse(reply, 400, "Bad Request", request);
    if (balance < 1) {
      return refuse(reply, 402, "Insufficient balance", "A balance of at least $1 is required to deploy");
    }
    if (refuseNext || request.gpuCount > request.gpu.max_count) {
      refuseNext = false;
      return refuse(reply, 400, "No capacity", "No available hostnodes with the requested resources");
    }
    const vm: EmulatedVm = {
      id: randomUUID(),
      name: request.name,
      status: "starting",
      locationId: request.locationId,
      resources: request.resources,
      rateHourly: rateOf(request),
      bootScript: request.runcmd.length > 0 ? request.runcmd.join("\n") : null,
      booted: false,
      timer: null,
    };
    vms.set(vm.id, vm);
    bootLater(vm);
    reply(201, { data: { type: "virtualmachine", id: vm.id, name: vm.name, status: vm.status } });
  };

  const stop = (vm: EmulatedVm, reply: Reply) => {
    if (vm.status === "starting" || vm.status === "running") {
      if (vm.timer) clearTimeout(vm.timer);
      vm.timer = null;
      vm.status = "stopping";
      void host.halt(vm.id).then(() => {
        if (vm.status === "stopping") vm.status = "stopped";
      });
    }
    reply(200, { data: { type: "virtualmachine", id: vm.id, attributes: { status: vm.status } } });
  };

  const start = (vm: EmulatedVm, reply: Reply) => {
    if (vm.status === "stopping") return refuse(reply, 409, "Conflict", "The instance is still stopping");
    if (vm.status === "stopped") {
      rmSync(poweredOffMark(host, vm.id), { force: true });
      vm.status = "starting";
      bootLater(vm);
    }
    reply(200, { data: { type: "virtualmachine", id: vm.id, attributes: { status: vm.status } } });
  };

  const remove = (vm: EmulatedVm, reply: Reply) => {
    if (vm.timer) clearTimeout(vm.timer);
    vms.delete(vm.id);
    void host.halt(vm.id);
    reply(200, { data: { type: "success", message: "Instance deleted" } });
  };

  const server = await startEmulatorServer(faults, (request, reply) => {
    if (request.key !== token) return refuse(reply, 401, "Unauthorized");
    const path = request.url.pathname.replace(/^\/api\/v2/, "");
    if (request.method === "GET" && path === "/locations") {
      return reply(200, { data: { locations: TENSORDOCK_LOCATIONS } });
    }
    if (path === "/instances") {
      if (request.method === "POST") return create(request.body, reply);
      if (request.method === "GET") {
        return reply(200, { data: [...vms.values()].map((vm) => resourceOf(refresh(vm))) });
      }
    }
    const [, id, action] = /^\/instances\/([^/]+)(?:\/(start|stop))?$/.exec(path) ?? [];
    const vm = id === undefined ? undefined : vms.get(decodeURIComponent(id));
    if (id !== undefined && vm === undefined) return refuse(reply, 404, "Not Found", "Instance not found");
    if (vm !== undefined) {
      if (request.method === "GET" && action === undefined)
        return reply(200, { data: resourceOf(refresh(vm)) });
      if (request.method === "DELETE" && action === undefined) return remove(vm, reply);
      if (request.method === "POST" && action === "stop") return stop(refresh(vm), reply);
      if (request.method === "POST" && action === "start") return start(refresh(vm), reply);
    }
    refuse(reply, 404, "Not Found");
  });

  return {
    url: `${server.origin}/api/v2`,
    token,
    faults,
    host,
    createRequests,
    refuseNextLaunch: () => {
      refuseNext = true;
    },
    setBalance: (usd) => {
      balance = usd;
    },
    close: async () => {
      for (const vm of vms.values()) if (vm.timer) clearTimeout(vm.timer);
      await host.haltAll();
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A JSON:API error answer, as TensorDock's 401 and 404 come. */
function refuse(reply: Reply, status: number, title: string, detail?: string): void {
  reply(status, { errors: [{ status: String(status), title, ...(detail ? { detail } : {}) }] });
}

function resourceOf(vm: EmulatedVm) {
  return {
    type: "virtualmachine",
    id: vm.id,
    attributes: {
      name: vm.name,
      status: vm.status,
      location_id: vm.locationId,
      image: "ubuntu2404",
      resources: vm.resources,
      rateHourly: vm.rateHourly,
    },
  };
}

interface CreateRequest {
  name: string;
  locationId: string;
  gpu: TensorDockLocation["gpus"][number];
  gpuCount: number;
  vcpus: number;
  ramGb: number;
  storageGb: number;
  resources: unknown;
  runcmd: string[];
}

/** The create body's meaning, or why TensorDock refuses it as a bad request. */
function validCreate(body: unknown): CreateRequest | string {
  const data = (body as { data?: { type?: unknown; attributes?: unknown } } | null)?.data;
  if (data?.type !== "virtualmachine") return "data.type must be virtualmachine";
  const attributes = (data.attributes ?? {}) as Record<string, unknown>;
  const { name, image, resources, location_id, ssh_key, cloud_init } = attributes;
  if (typeof name !== "string" || name === "") return "name is required";
  if (typeof image !== "string" || !IMAGES.has(image)) return `unknown image ${String(image)}`;
  if (typeof ssh_key !== "string" || ssh_key === "") return "An SSH key is required";
  const location = TENSORDOCK_LOCATIONS.find((l) => l.id === location_id);
  if (location === undefined) return `unknown location ${String(location_id)}`;
  const { vcpu_count, ram_gb, storage_gb, gpus } = (resources ?? {}) as Record<string, unknown>;
  if (!isCount(vcpu_count) || !isCount(ram_gb)) return "vcpu_count and ram_gb must be positive integers";
  if (typeof storage_gb !== "number" || storage_gb < 100) return "storage_gb must be at least 100";
  const requested = Object.entries((gpus ?? {}) as Record<string, { count?: unknown } | null>);
  if (requested.length !== 1) return "Exactly one GPU model is required for a location-based deployment";
  const [v0Name, wanted] = requested[0]!;
  const count = wanted?.count;
  const gpu = location.gpus.find((g) => g.v0Name === v0Name);
  if (gpu === undefined) return `${v0Name} is not offered at ${location.id}`;
  if (!isCount(count)) return "gpu count must be a positive integer";
  const runcmd = (cloud_init as { runcmd?: unknown } | undefined)?.runcmd ?? [];
  if (!Array.isArray(runcmd) || !runcmd.every((line) => typeof line === "string")) {
    return "cloud_init.runcmd must be a list of strings";
  }
  return {
    name,
    locationId: location.id,
    gpu,
    gpuCount: count,
    vcpus: vcpu_count,
    ramGb: ram_gb,
    storageGb: storage_gb,
    resources,
    runcmd,
  };
}

const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) > 0;

function rateOf(request: CreateRequest): number {
  const rate =
    request.gpu.price_per_hr * request.gpuCount +
    TENSORDOCK_VCPU_HOURLY * request.vcpus +
    TENSORDOCK_RAM_GB_HOURLY * request.ramGb +
    TENSORDOCK_STORAGE_GB_HOURLY * request.storageGb;
  return Math.round(rate * 10_000) / 10_000;
}

const poweredOffMark = (host: InstanceHost, id: string) => join(host.pathOf(id), "powered-off");

/**
 * A `poweroff` for the emulated VMs: it marks the VM (its disk is $HOME) and ends every process it
 * runs (the boot script's process group), as powering a real VM off would.
 */
function installPoweroff(root: string): string {
  const bin = join(root, "bin");
  mkdirSync(bin);
  const poweroff = join(bin, "poweroff");
  writeFileSync(poweroff, `#!/bin/sh\ntouch "$HOME/powered-off"\nkill -KILL 0\n`);
  chmodSync(poweroff, 0o755);
  return bin;
}
