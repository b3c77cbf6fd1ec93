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

  async #call(method: string, path: string, payload?: unknown): Promise<unknown> {
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
    const answer = (typeof body === "object" && body !== null ? body : {}) as {
      success?: boolean;
      msg?: string;
      error?: string;
    };
    if (status >= 400 || answer.success === false) {
      const message = answer.msg ?? answer.error ?? JSON.stringify(body).slice(0, 300);
      throw new ProviderApiError(
        "vastai",
        status,
        `${method} ${path} failed (HTTP ${status}): ${message}`,
        false,
      );
    }
    return body;
  }
}
