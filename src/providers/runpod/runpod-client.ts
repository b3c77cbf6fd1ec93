import { callJson, DEFAULT_RETRY, ProviderApiError, type RetryPolicy } from "../http.ts";

export const RUNPOD_GRAPHQL_URL = "https://api.runpod.io/graphql";

/** One element of `gpuTypes`, with `lowestPrice` for the GPU count asked. Prices are USD per GPU-hour. */
export interface RunPodGpuType {
  id: string;
  displayName: string;
  memoryInGb: number;
  maxGpuCount: number | null;
  secureCloud: boolean;
  communityCloud: boolean;
  securePrice: number | null;
  communityPrice: number | null;
  secureSpotPrice: number | null;
  communitySpotPrice: number | null;
  lowestPrice: {
    minimumBidPrice: number | null;
    uninterruptablePrice: number | null;
    minVcpu: number | null;
    minMemory: number | null;
    stockStatus: "High" | "Medium" | "Low" | "None" | null;
  } | null;
}

/** Messages RunPod sends (with HTTP 200) when a request may succeed later. */
const RETRYABLE_MESSAGE = /no longer any instances available|try again later/i;

/**
 * RunPod's GraphQL API. Client errors come back as HTTP 200 with an `errors` array, which this
 * turns into a ProviderApiError carrying RunPod's message.
 */
export class RunPodClient {
  readonly #apiKey: string;
  readonly #url: string;
  readonly #retry: RetryPolicy;

  constructor(options: { apiKey: string; graphqlUrl?: string; retry?: RetryPolicy }) {
    this.#apiKey = options.apiKey;
    this.#url = options.graphqlUrl ?? RUNPOD_GRAPHQL_URL;
    this.#retry = options.retry ?? DEFAULT_RETRY;
  }

  async query<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
    const { status, body } = await callJson(
      "runpod",
      this.#url,
      {
        method: "POST",
        credential: { value: this.#apiKey, setting: "RUNPOD_API_KEY" },
        body: { query, variables },
      },
      this.#retry,
    );
    const answer = (typeof body === "object" && body !== null ? body : {}) as {
      data?: T;
      errors?: { message: string; extensions?: { code?: string } }[];
    };
    const error = answer.errors?.[0];
    if (error) {
      const retryable =
        RETRYABLE_MESSAGE.test(error.message) || error.extensions?.code === "INTERNAL_SERVER_ERROR";
      throw new ProviderApiError("runpod", status, error.message, retryable);
    }
    if (status !== 200 || answer.data === undefined) {
      throw new ProviderApiError(
        "runpod",
        status,
        `unexpected answer (HTTP ${status}): ${JSON.stringify(body).slice(0, 300)}`,
        false,
      );
    }
    return answer.data;
  }

  async gpuTypes(gpuCount: number): Promise<RunPodGpuType[]> {
    const data = await this.query<{ gpuTypes: RunPodGpuType[] }>(
      `query GpuTypes($gpuCount: Int!) {
        gpuTypes {
          id displayName memoryInGb maxGpuCount secureCloud communityCloud
          securePrice communityPrice secureSpotPrice communitySpotPrice
          lowestPrice(input: { gpuCount: $gpuCount }) {
            minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus
          }
        }
      }`,
      { gpuCount },
    );
    return data.gpuTypes;
  }
}
