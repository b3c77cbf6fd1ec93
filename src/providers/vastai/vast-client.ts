import { callJson, DEFAULT_RETRY, ProviderApiError, type RetryPolicy } from "../http.ts";

export const VAST_API_URL = "https://console.vast.ai/api/v0";

/** An element of `/bundles/`'s `offers`. `gpu_ram` and `cpu_ram` are in MB; `dph_*` are USD per hour for the machine. */
export interface VastOffer {
  id: number;
  machine_id: number;
  host_id: number;
  gpu_name: string;
  num_gpus: number;
  gpu_ram: number;
  cpu_cores: number | null;
  cpu_ram: number | null;
  dph_total: number;
  min_bid: number | null;
  reliability: number | null;
  geolocation: string | null;
  rentable: boolean;
  rented: boolean;
}

/** A field → operator map as `/bundles/` takes it (`{"num_gpus": {"gte": 1}}`), plus `order`, `type`, `limit`. */
export type VastSearch = Record<string, unknown>;

/**
 * What `PUT /asks/{id}/` takes. In the `args` launch mode the image's entrypoint is kept unless
 * `onstart` names another (the CLI's `--entrypoint` travels as `onstart`), and `args` are its
 * arguments. `env` holds environment variables, and docker flags as keys (`"-p 8000:8000": "1"`).
 */
export interface VastCreateRequest {
  client_id: "me";
  image: string;
  /** GB of local disk. */
  disk: number;
  label: string;
  env: Record<string, string>;
  onstart: string;
  runtype: "args";
  args: string[];
  /** USD per hour for the machine: a bid (interruptible instance); null rents on demand. */
  price: number | null;
}

/**
 * An instance as `GET /instances/{id}/` and `GET /instances?owner=me` describe it. `actual_status`
 * is the container's (`loading created running exited stopped`, also `frozen` and `unknown`; null
 * before the machine reports); `cur_state`, `intended_status` and `next_state` are the contract's
 * (`running` or `stopped`). Unconfirmed: `is_bid`, read as whether the instance is interruptible.
 */
export interface VastInstance {
  id: number;
  machine_id: number;
  actual_status: string | null;
  cur_state: string | null;
  intended_status: string | null;
  next_state: string | null;
  status_msg: string | null;
  label: string | null;
  /** USD per hour billed for the instance. */
  dph_total: number;
  is_bid?: boolean;
}

/** Vast's failure answers: `{"success": false, "error": code, "msg": text}`, sometimes only one of the two. */
interface VastAnswer {
  success?: boolean;
  error?: string;
  msg?: string;
  new_contract?: number;
}

/**
 * How Vast refuses an ask that can no longer be rented (taken by someone else, or gone). Not
 * confirmed: seen in the wild as 404, 410 and 400, with `error: "no_such_ask"` or a message
 * saying the offer "is not available"; any of these is no capacity, worth another offer later.
 */
const NO_SUCH_ASK = /no_such_ask|not available/i;

/** Vast.ai's REST API. Failures often answer `{"success": false, "msg"|"error": …}`. */
export class VastClient {
  readonly #apiKey: string;
  readonly #url: string;
  readonly #retry: RetryPolicy;

  constructor(options: { apiKey: string; apiUrl?: string; retry?: RetryPolicy }) {
    this.#apiKey = options.apiKey;
    this.#url = (options.apiUrl ?? VAST_API_URL).replace(/\/+$/, "");
    this.#retry = options.retry ?? DEFAULT_RETRY;
  }

  async searchOffers(search: VastSearch): Promise<VastOffer[]> {
    const body = await this.#call("POST", "/bundles/", search);
    return (body as { offers?: VastOffer[] }).offers ?? [];
  }

  /**
   * Rents the ask; answers the new instance's id (`new_contract`). An ask no longer available is a
   * retryable ProviderApiError. A bid below the ask's minimum still creates an instance, stopped,
   * while the answer is an error carrying its `new_contract`: that instance is destroyed here before
   * the error is thrown, so a refused launch leaves nothing billed behind.
   */
  async createInstance(askId: string, request: VastCreateRequest): Promise<number> {
    const path = `/asks/${encodeURIComponent(askId)}/`;
    const reply = await this.#request("PUT", path, request);
    const { status, answer } = reply;
    if (failed(reply) && answer.new_contract !== undefined) {
      await this.destroyInstance(String(answer.new_contract));
      // Retryable: the quote was stale, a fresh offer at the current price may rent.
      throw this.#failure("PUT", path, reply, true);
    }
    if (failed(reply)) {
      const noCapacity =
        status === 404 || status === 410 || NO_SUCH_ASK.test([answer.error, answer.msg].join(" "));
      throw this.#failure("PUT", path, reply, noCapacity);
    }
    if (answer.new_contract === undefined) {
      throw new ProviderApiError("vastai", status, `PUT ${path} answered no new_contract`, false);
    }
    return answer.new_contract;
  }

  /**
   * The instance, or null when Vast does not know it (any more). Not confirmed how Vast answers an
   * unknown id: taken as 404 with `error: "no_such_instance"`; `{"instances": null}` is read the same.
   */
  async showInstance(id: string): Promise<VastInstance | null> {
    const path = `/instances/${encodeURIComponent(id)}/`;
    const reply = await this.#request("GET", path);
    if (unknownInstance(reply)) return null;
    if (failed(reply)) throw this.#failure("GET", path, reply, false);
    return (reply.body as { instances?: VastInstance | null }).instances ?? null;
  }

  async listInstances(): Promise<VastInstance[]> {
    const body = await this.#call("GET", "/instances?owner=me");
    return (body as { instances?: VastInstance[] }).instances ?? [];
  }

  /** Stops the container (the GPU is released, the disk kept) or starts it again. */
  async setState(id: string, state: "stopped" | "running"): Promise<void> {
    await this.#call("PUT", `/instances/${encodeURIComponent(id)}/`, { state });
  }

  /** Idempotent: Vast's `no_such_instance` means it is already gone. */
  async destroyInstance(id: string): Promise<void> {
    const path = `/instances/${encodeURIComponent(id)}/`;
    const reply = await this.#request("DELETE", path);
    if (unknownInstance(reply)) return;
    if (failed(reply)) throw this.#failure("DELETE", path, reply, false);
  }

  async #call(method: string, path: string, payload?: unknown): Promise<unknown> {
    const reply = await this.#request(method, path, payload);
    if (failed(reply)) throw this.#failure(method, path, reply, false);
    return reply.body;
  }

  async #request(method: string, path: string, payload?: unknown): Promise<VastReply> {
    const { status, body } = await callJson(
      "vastai",
      `${this.#url}${path}`,
      {
        method,
        credential: { value: this.#apiKey, setting: "VAST_API_KEY" },
        ...(payload !== undefined ? { body: payload } : {}),
      },
      this.#retry,
    );
    const answer = (typeof body === "object" && body !== null ? body : {}) as VastAnswer;
    return { status, body, answer };
  }

  #failure(method: string, path: string, reply: VastReply, retryable: boolean): ProviderApiError {
    const { status, body, answer } = reply;
    const message = answer.msg ?? answer.error ?? JSON.stringify(body).slice(0, 300);
    return new ProviderApiError(
      "vastai",
      status,
      `${method} ${path} failed (HTTP ${status}): ${message}`,
      retryable,
    );
  }
}

/** An answer with its body read as Vast's envelope (empty when the body is not an object). */
interface VastReply {
  status: number;
  body: unknown;
  answer: VastAnswer;
}

function failed({ status, answer }: VastReply): boolean {
  return status >= 400 || answer.success === false;
}

function unknownInstance({ status, answer }: VastReply): boolean {
  return status === 404 || answer.error === "no_such_instance";
}
