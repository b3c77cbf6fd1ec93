import { existsSync, openAsBlob, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details: unknown) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Where `hangar login` keeps its API key per server (0600): HANGAR_CONFIG_DIR or ~/.config/hangar. */
export function loginFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.HANGAR_CONFIG_DIR ?? join(homedir(), ".config", "hangar"), "logins.json");
}

export function readLogins(
  env: NodeJS.ProcessEnv = process.env,
): Record<string, { key: string; email: string }> {
  const file = loginFile(env);
  return existsSync(file)
    ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, { key: string; email: string }>)
    : {};
}

function savedLogin(env: NodeJS.ProcessEnv, url: string): string | undefined {
  return readLogins(env)[url]?.key;
}

export interface UploadFile {
  path: string;
  /** The name the server stores it under (may contain sub-folders). */
  name: string;
}

/** A small typed client of the Hangar HTTP API, used by the CLI and the end-to-end tests. */
export class HangarClient {
  readonly baseUrl: string;
  readonly #apiKey: string;

  constructor(baseUrl: string, apiKey: string) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.#apiKey = apiKey;
  }

  /**
   * HANGAR_URL and HANGAR_API_KEY; else the key `hangar login` saved for that server; else the
   * embedded default's saved admin key.
   */
  static urlFromEnv(env: NodeJS.ProcessEnv = process.env): string {
    return (env.HANGAR_URL ?? `http://127.0.0.1:${env.HANGAR_PORT ?? 7420}`).replace(/\/$/, "");
  }

  static fromEnv(env: NodeJS.ProcessEnv = process.env): HangarClient {
    const url = HangarClient.urlFromEnv(env);
    let key = env.HANGAR_API_KEY ?? savedLogin(env, url);
    const keyFile = join(resolve(env.HANGAR_DATA_DIR ?? ".hangar"), "admin-api-key");
    if (!key && existsSync(keyFile)) key = readFileSync(keyFile, "utf8").trim();
    if (!key) {
      throw new Error(
        `No API key: run \`hangar login\`, or set HANGAR_API_KEY (the server prints one on first start, and saves it in ${keyFile})`,
      );
    }
    return new HangarClient(url, key);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = {
      method,
      headers: this.#apiKey ? { authorization: `Bearer ${this.#apiKey}` } : {},
    };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { ...init.headers, "content-type": "application/json" };
    }
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, init);
    } catch (error) {
      throw new Error(
        `Cannot reach the Hangar server at ${this.baseUrl} (${(error as Error).cause ?? (error as Error).message}). Start it with ./hangar server`,
      );
    }
    const text = await response.text();
    const type = response.headers.get("content-type") ?? "";
    const parsed: unknown = type.includes("json") && text ? JSON.parse(text) : text;
    if (!response.ok) {
      const error = (parsed as { error?: { code: string; message: string; details: unknown } }).error;
      throw new ApiError(
        response.status,
        error?.code ?? "http_error",
        error?.message ?? text,
        error?.details ?? null,
      );
    }
    return parsed as T;
  }

  async #form(files: UploadFile[], fields: Record<string, string> = {}): Promise<FormData> {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    for (const file of files) form.append("file", await openAsBlob(file.path), file.name);
    return form;
  }

  async uploadNotebook(path: string, name: string) {
    return this.request<{ id: string; name: string; cells: number }>(
      "POST",
      "/api/v1/notebooks",
      await this.#form([{ path, name }]),
    );
  }

  async uploadDataset(files: UploadFile[], name?: string) {
    return this.request<{
      id: string;
      name: string;
      files: { path: string; size: number }[];
      total_size: number;
    }>("POST", "/api/v1/datasets", await this.#form(files, name ? { name } : {}));
  }

  submitRun(notebookId: string, body: Record<string, unknown>) {
    return this.request<RunView>("POST", `/api/v1/notebooks/${encodeURIComponent(notebookId)}/runs`, body);
  }

  getRun(id: string) {
    return this.request<RunView>("GET", `/api/v1/runs/${encodeURIComponent(id)}`);
  }

  listRuns(limit = 50) {
    return this.request<{ runs: RunView[] }>("GET", `/api/v1/runs?limit=${limit}`);
  }

  cancelRun(id: string) {
    return this.request<RunView>("POST", `/api/v1/runs/${encodeURIComponent(id)}/cancel`);
  }

  downloads(id: string) {
    return this.request<DownloadView>("GET", `/api/v1/runs/${encodeURIComponent(id)}/download`);
  }

  logs(id: string) {
    return this.request<string>("GET", `/api/v1/runs/${encodeURIComponent(id)}/logs`);
  }

  /** Server-Sent Events of the run's log until it ends; yields each log text. */
  async *followLogs(id: string): AsyncGenerator<string, string> {
    const response = await fetch(`${this.baseUrl}/api/v1/runs/${encodeURIComponent(id)}/logs?follow=true`, {
      headers: { authorization: `Bearer ${this.#apiKey}`, accept: "text/event-stream" },
    });
    if (!response.ok || !response.body) {
      const body = (await response.json()) as { error: { code: string; message: string } };
      throw new ApiError(response.status, body.error.code, body.error.message, null);
    }
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let split = buffer.indexOf("\n\n");
      while (split >= 0) {
        const frame = buffer.slice(0, split);
        buffer = buffer.slice(split + 2);
        const event = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1] ?? "null";
        if (event === "log") yield (JSON.parse(data) as { text: string }).text;
        if (event === "end") return (JSON.parse(data) as { status: string }).status;
        split = buffer.indexOf("\n\n");
      }
    }
    return "unknown";
  }
}

export interface RunView {
  id: string;
  notebook_id: string;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  attempts: number;
  max_attempts: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  progress: { done: number; total: number; phase: string } | null;
  instance: { instance_id: string; provider: string; note: string } | null;
  error: { code: string; message: string; details: unknown } | null;
}

export interface DownloadLink {
  path: string;
  size: number;
  url: string;
}

export interface DownloadView {
  run_id: string;
  status: string;
  executed_notebook: DownloadLink | null;
  log: DownloadLink | null;
  outputs: DownloadLink[];
}
