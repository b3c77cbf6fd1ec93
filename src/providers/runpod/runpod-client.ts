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

/** A pod as `pod(input:{podId})` and `myself { pods }` describe it. `runtime` is null until the container is up. */
export interface RunPodPod {
  id: string;
  name: string;
  desiredStatus: "RUNNING" | "EXITED" | "TERMINATED" | "CREATED" | "RESTARTING" | "PAUSED";
  costPerHr: number;
  gpuCount: number;
  imageName: string;
  /** `KEY=VALUE` strings. */
  env: string[] | null;
  machineId: string | null;
  podType: "RESERVED" | "INTERRUPTABLE" | null;
  lastStatusChange: string | null;
  runtime: { uptimeInSeconds: number | null } | null;
}

/** What `podFindAndDeployOnDemand` and `podRentInterruptable` take. */
export interface RunPodDeployInput {
  name: string;
  imageName: string;
  cloudType: "ALL" | "SECURE" | "COMMUNITY";
  gpuTypeId: string;
  gpuCount: number;
  containerDiskInGb: number;
  volumeInGb: number;
  dockerArgs: string;
  env: { key: string; value: string }[];
  /** Spot only: USD per GPU-hour. */
  bidPerGpu?: number;
}

const POD_FIELDS =
  "id name desiredStatus costPerHr gpuCount imageName env machineId podType lastStatusChange runtime { uptimeInSeconds }";

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

  /** Deploys an on-demand pod, or a spot one when `bidPerGpu` is given; answers the new pod's id and host. */
  async deployPod(input: RunPodDeployInput): Promise<{ id: string; machineId: string | null }> {
    const { bidPerGpu, ...common } = input;
    if (bidPerGpu !== undefined) {
      const data = await this.query<{ podRentInterruptable: { id: string; machineId: string | null } }>(
        `mutation Rent($input: PodRentInterruptableInput!) { podRentInterruptable(input: $input) { id machineId } }`,
        { input: { ...common, bidPerGpu } },
      );
      return data.podRentInterruptable;
    }
    const data = await this.query<{ podFindAndDeployOnDemand: { id: string; machineId: string | null } }>(
      `mutation Deploy($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id machineId } }`,
      { input: common },
    );
    return data.podFindAndDeployOnDemand;
  }

  /** The pod, or null when RunPod does not know it (any more). */
  async pod(podId: string): Promise<RunPodPod | null> {
    try {
      const data = await this.query<{ pod: RunPodPod | null }>(
        `query Pod($podId: String!) { pod(input: { podId: $podId }) { ${POD_FIELDS} } }`,
        { podId },
      );
      return data.pod;
    } catch (error) {
      // Unconfirmed whether an unknown pod is a null `pod` or an error; both mean it is gone.
      if (error instanceof ProviderApiError && /not found/i.test(error.message)) return null;
      throw error;
    }
  }

  async currentSpendPerHour(): Promise<number> {
    const data = await this.query<{ myself: { currentSpendPerHr: number | null } | null }>(
      "query Spend { myself { currentSpendPerHr } }",
    );
    return data.myself?.currentSpendPerHr ?? 0;
  }

  /** Idempotent: RunPod's "pod not found to terminate" means it is already gone. */
  async terminatePod(podId: string): Promise<void> {
    try {
      await this.query(`mutation Terminate($podId: String!) { podTerminate(input: { podId: $podId }) }`, {
        podId,
      });
    } catch (error) {
      if (!(error instanceof ProviderApiError && /not found to terminate/i.test(error.message))) throw error;
    }
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
