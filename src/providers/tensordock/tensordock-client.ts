import { callJson, DEFAULT_RETRY, ProviderApiError, type RetryPolicy } from "../http.ts";

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

/** TensorDock's v2 API: bearer token, JSON:API envelopes, 100 requests a minute per organisation. */
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
    const { status, body } = await callJson(
      "tensordock",
      `${this.#url}/locations`,
      { method: "GET", credential: { value: this.#token, setting: "TENSORDOCK_API_TOKEN" } },
      this.#retry,
    );
    const locations = (body as { data?: { locations?: TensorDockLocation[] } } | null)?.data?.locations;
    if (status !== 200 || !Array.isArray(locations)) {
      throw new ProviderApiError(
        "tensordock",
        status,
        `unexpected answer to GET /locations (HTTP ${status}): ${JSON.stringify(body).slice(0, 300)}`,
        false,
      );
    }
    return locations;
  }
}
