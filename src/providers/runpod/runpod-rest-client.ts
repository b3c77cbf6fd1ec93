import { callJson, DEFAULT_RETRY, ProviderApiError, type RetryPolicy } from "../http.ts";

/** REST v2 (v1 was retired on 2026-11-15) lives beside GraphQL on the same host. */
export const restUrlBeside = (graphqlUrl: string): string => new URL("/v2", graphqlUrl).toString();

export type RunPodPodStatus = "PROVISIONING" | "STARTING" | "RUNNING" | "EXITED" | "ERROR" | "TERMINATED";

/** A pod as REST v2 describes it (the fields Hangar reads). `runtime` is null unless RUNNING. */
export interface RunPodRestPod {
  id: string;
  name: string;
  status: RunPodPodStatus;
  /** Valid transitions from this status. */
  actions: string[];
  env: Record<string, string>;
  /** USD per hour now (0 when EXITED or TERMINATED). */
  cost: number;
  gpu?: { id: string; count: number };
  runtime: { uptime?: number } | null;
}

/**
 * RunPod's REST v2 API, used where it serves better than GraphQL: a pod's lifecycle has an `ERROR`
 * status (a container that cannot start is seen at once instead of at the boot timeout), errors are
 * RFC 9457 problem+json with real status codes (404 for a gone pod, not a message to match), 429
 * carries Retry-After. Pods are still deployed through GraphQL, which alone rents interruptible (spot)
 * pods; their ids are the same in both APIs.
 */
export class RunPodRestClient {
  readonly #apiKey: string;
  readonly #url: string;
  readonly #retry: RetryPolicy;

  constructor(options: { apiKey: string; restUrl: string; retry?: RetryPolicy }) {
    this.#apiKey = options.apiKey;
    this.#url = options.restUrl.replace(/\/$/, "");
    this.#retry = options.retry ?? DEFAULT_RETRY;
  }

  async #call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    return callJson(
      "runpod",
      `${this.#url}${path}`,
      {
        method,
        credential: { value: this.#apiKey, setting: "RUNPOD_API_KEY" },
        ...(body !== undefined ? { body } : {}),
      },
      this.#retry,
    );
  }

  /** A problem+json answer as an error carrying RunPod's `detail`. */
  #problem(status: number, body: unknown): ProviderApiError {
    const problem = (typeof body === "object" && body !== null ? body : {}) as {
      title?: string;
      detail?: string;
    };
    return new ProviderApiError(
      "runpod",
      status,
      problem.detail ?? problem.title ?? `HTTP ${status}: ${String(body).slice(0, 200)}`,
      false,
    );
  }

  /** The pod, or null when RunPod no longer has it. */
  async pod(podId: string): Promise<RunPodRestPod | null> {
    const { status, body } = await this.#call("GET", `/pods/${encodeURIComponent(podId)}`);
    if (status === 404) return null;
    if (status !== 200) throw this.#problem(status, body);
    return body as RunPodRestPod;
  }

  async pods(): Promise<RunPodRestPod[]> {
    const { status, body } = await this.#call("GET", "/pods");
    if (status !== 200) throw this.#problem(status, body);
    return (body as { pods: RunPodRestPod[] }).pods;
  }

  /** Idempotent: a pod RunPod no longer has (404) is already terminated. */
  async deletePod(podId: string): Promise<void> {
    const { status, body } = await this.#call("DELETE", `/pods/${encodeURIComponent(podId)}`);
    if (status === 204 || status === 404) return;
    throw this.#problem(status, body);
  }

  /** `start` or `stop`; a pod already there answers 409, which is success here. */
  async podAction(podId: string, action: "start" | "stop"): Promise<void> {
    const { status, body } = await this.#call("POST", `/pods/${encodeURIComponent(podId)}/action`, {
      action,
    });
    if (status === 200 || status === 204) return;
    if (status === 409) {
      const pod = await this.pod(podId);
      if (pod && (action === "stop" ? pod.status === "EXITED" : pod.status !== "EXITED")) return;
    }
    throw this.#problem(status, body);
  }
}
