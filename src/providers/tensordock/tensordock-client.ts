import { callJson, DEFAULT_RETRY, ProviderApiError, type RetryPolicy } from "../http.ts";
import { shellQuote } from "../shell.ts";

export const TENSORDOCK_API_URL = "https://dashboard.tensordock.com/api/v2";

/**
 * A GPU as `GET /locations` lists it. `v0Name` encodes model, form factor and memory
 * (`h100-sxm5-80gb`). Unconfirmed: whether `price_per_hr` is per GPU (taken so here) and the shape
 * of `resources` (read defensively).
 */
export interface TensorDockGpu {
  v0Name: string;
  max_count: number;
  price_per_hr: number;
  resources?: { max_vcpus?: number; max_ram_gb?: number } | null;
}

export interface TensorDockLocation {
  id: string;
  city: string;
  country: string;
  gpus: TensorDockGpu[];
}

/** A virtual machine to create at one location, with one GPU model. */
export interface TensorDockInstanceRequest {
  name: string;
  locationId: string;
  gpu: { v0Name: string; count: number };
  vcpus: number;
  ramGb: number;
  /** At least 100: TensorDock refuses less. */
  storageGb: number;
  /** TensorDock requires an SSH public key on every VM. */
  sshPublicKey: string;
  /** A shell script cloud-init runs as root once, at the end of the first boot. */
  bootScript: string;
}

/**
 * A virtual machine as TensorDock describes it. Not confirmed by the reference: the status values
 * (taken as `starting running stopping stopped deleting deleted error`), the name of the hourly
 * rate (`rateHourly` or `rate_hourly`, both read) and `location_id` on the instance.
 */
export interface TensorDockInstance {
  id: string;
  name: string;
  status: string;
  /** USD per hour billed for the whole VM (GPUs, vCPUs, RAM, storage); null when not reported. */
  rateHourly: number | null;
  locationId: string | null;
}

/** The OS image every VM boots; Hangar's bootstrap command runs on it, not in a container. */
export const TENSORDOCK_IMAGE = "ubuntu2404";

/**
 * The boot script for `command` with `env` exported first: a VM has no container environment, so
 * the agent's settings travel inside the script, each value single-quoted so that spaces, quotes,
 * `$` and newlines reach the agent unchanged.
 */
export function bootScript(command: string, env: Readonly<Record<string, string>>): string {
  const exports = Object.entries(env).map(([key, value]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`Not an environment variable name: ${key}`);
    return `export ${key}=${shellQuote(value)}`;
  });
  return [...exports, command].join("\n");
}

/**
 * TensorDock's v2 API: bearer token, JSON:API envelopes, 100 requests a minute per organisation.
 * Only `GET /locations` and the body of `POST /instances` are confirmed; the rest (instance paths
 * and answers, error bodies) is marked where it is read.
 */
export class TensorDockClient {
  readonly #token: string;
  readonly #url: string;
  readonly #retry: RetryPolicy;

  constructor(options: { token: string; apiUrl?: string; retry?: RetryPolicy }) {
    this.#token = options.token;
    this.#url = (options.apiUrl ?? TENSORDOCK_API_URL).replace(/\/+$/, "");
    this.#retry = options.retry ?? DEFAULT_RETRY;
  }

  async locations(): Promise<TensorDockLocation[]> {
    const { status, body } = await this.#call("GET", "/locations");
    const locations = (body as { data?: { locations?: TensorDockLocation[] } } | null)?.data?.locations;
    if (status !== 200 || !Array.isArray(locations)) throw unexpected("GET /locations", status, body);
    return locations;
  }

  /**
   * Creates the VM and returns its id. The body is the reference's; unconfirmed: `cloud_init.runcmd`
   * (TensorDock's docs list it, no example found) and whether a VM without a dedicated IP needs
   * port forwards (Hangar's agent only connects out). The answer is taken as
   * `{"data":{"type":"virtualmachine","id",...}}`, as TensorDock's docs show it.
   */
  async createInstance(request: TensorDockInstanceRequest): Promise<string> {
    const { status, body } = await this.#call("POST", "/instances", {
      data: {
        type: "virtualmachine",
        attributes: {
          name: request.name,
          type: "virtualmachine",
          image: TENSORDOCK_IMAGE,
          resources: {
            vcpu_count: request.vcpus,
            ram_gb: request.ramGb,
            storage_gb: request.storageGb,
            gpus: { [request.gpu.v0Name]: { count: request.gpu.count } },
          },
          location_id: request.locationId,
          useDedicatedIp: false,
          ssh_key: request.sshPublicKey,
          // cloud-init writes runcmd entries into one shell script, run once on the first boot.
          cloud_init: { runcmd: [request.bootScript] },
        },
      },
    });
    if (status >= 300) throw refusal("POST /instances", status, body);
    const id = (body as { data?: { id?: unknown } } | null)?.data?.id;
    if (typeof id !== "string" || id === "") throw unexpected("POST /instances", status, body);
    return id;
  }

  /** The VM, or null when TensorDock does not know it (404; unconfirmed, as is the path). */
  async getInstance(id: string): Promise<TensorDockInstance | null> {
    const { status, body } = await this.#call("GET", instancePath(id));
    if (status === 404) return null;
    const instance = status === 200 ? instanceOf((body as { data?: unknown } | null)?.data) : null;
    if (instance === null) throw unexpected(`GET /instances/${id}`, status, body);
    return instance;
  }

  /**
   * Every VM of the organisation. The answer's shape is not confirmed and the sources disagree:
   * `data` as the list, `data.instances` or `data.attributes.instances` are all read. Anything else
   * throws: an empty list by mistake would hide billing VMs from reconciliation.
   */
  async listInstances(): Promise<TensorDockInstance[]> {
    const { status, body } = await this.#call("GET", "/instances");
    const instances = status === 200 ? instanceListOf(body) : null;
    if (instances === null) throw unexpected("GET /instances", status, body);
    return instances;
  }

  /** Deletes the VM; one TensorDock no longer knows (404) counts as deleted. Path unconfirmed. */
  async deleteInstance(id: string): Promise<void> {
    const { status, body } = await this.#call("DELETE", instancePath(id));
    if (status !== 404 && status >= 300) throw refusal(`DELETE /instances/${id}`, status, body);
  }

  /** Stops the VM, keeping its disk. `POST /instances/{id}/stop` is not confirmed. */
  async stopInstance(id: string): Promise<void> {
    const { status, body } = await this.#call("POST", `${instancePath(id)}/stop`);
    if (status >= 300) throw refusal(`POST /instances/${id}/stop`, status, body);
  }

  /** Starts a stopped VM; its GPUs may be taken meanwhile. `POST /instances/{id}/start` is not confirmed. */
  async startInstance(id: string): Promise<void> {
    const { status, body } = await this.#call("POST", `${instancePath(id)}/start`);
    if (status >= 300) throw refusal(`POST /instances/${id}/start`, status, body);
  }

  #call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    return callJson(
      "tensordock",
      `${this.#url}${path}`,
      {
        method,
        credential: { value: this.#token, setting: "TENSORDOCK_API_TOKEN" },
        ...(body !== undefined ? { body } : {}),
      },
      this.#retry,
    );
  }
}

const instancePath = (id: string) => `/instances/${encodeURIComponent(id)}`;

/**
 * A JSON:API resource as a VM. TensorDock's docs show both `{type, id, attributes:{name, status}}`
 * and the attributes inline (`{type, id, name, status}`), so both are read.
 */
function instanceOf(resource: unknown): TensorDockInstance | null {
  if (typeof resource !== "object" || resource === null) return null;
  const { attributes, ...inline } = resource as { attributes?: unknown };
  const fields: Record<string, unknown> = {
    ...inline,
    ...(typeof attributes === "object" && attributes !== null ? attributes : {}),
  };
  const { id, name, status } = fields;
  if (typeof id !== "string" || typeof status !== "string") return null;
  const rate = fields.rateHourly ?? fields.rate_hourly;
  return {
    id,
    name: typeof name === "string" ? name : "",
    status,
    rateHourly: typeof rate === "number" && Number.isFinite(rate) ? rate : null,
    locationId: typeof fields.location_id === "string" ? fields.location_id : null,
  };
}

/** The VMs in a `GET /instances` answer; null when it has none of the shapes read (see listInstances). */
export function instanceListOf(body: unknown): TensorDockInstance[] | null {
  const data = (body as { data?: unknown } | null)?.data;
  const wrapped = data as { instances?: unknown; attributes?: { instances?: unknown } } | null | undefined;
  const resources = Array.isArray(data) ? data : (wrapped?.instances ?? wrapped?.attributes?.instances);
  if (!Array.isArray(resources)) return null;
  const instances = resources.map(instanceOf);
  return instances.every((instance) => instance !== null) ? instances : null;
}

/**
 * A refused request. Not confirmed: TensorDock's error bodies (read as JSON:API `errors[]` with
 * `title`/`detail`, or a `message`/`error` string) and how it says "no capacity" or "balance too
 * low" — recognised by their wording. No capacity may pass (another location, later); a low
 * balance or a bad request will not.
 */
function refusal(what: string, status: number, body: unknown): ProviderApiError {
  const reason = reasonOf(body);
  const retryable = !/balance|funds|payment|credit/i.test(reason) && NO_CAPACITY.test(reason);
  return new ProviderApiError("tensordock", status, `${what} refused (HTTP ${status}): ${reason}`, retryable);
}

const NO_CAPACITY =
  /no (longer )?(available|capacity)|not enough|insufficient (gpu|resource|capacity|stock)|out of stock|sold out|unavailable/i;

function reasonOf(body: unknown): string {
  const { errors, message, error } = (typeof body === "object" && body !== null ? body : {}) as {
    errors?: { title?: unknown; detail?: unknown }[];
    message?: unknown;
    error?: unknown;
  };
  const parts = Array.isArray(errors)
    ? errors.flatMap((e) => [e?.title, e?.detail]).filter((p): p is string => typeof p === "string")
    : [message, error].filter((p): p is string => typeof p === "string");
  return (parts.length > 0 ? parts.join(": ") : JSON.stringify(body)).slice(0, 300);
}

function unexpected(what: string, status: number, body: unknown): ProviderApiError {
  return new ProviderApiError(
    "tensordock",
    status,
    `unexpected answer to ${what} (HTTP ${status}): ${JSON.stringify(body).slice(0, 300)}`,
    false,
  );
}
