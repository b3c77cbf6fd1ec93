import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A failure an emulator answers with instead of the real answer, as the providers do under load. */
export type Fault =
  | { kind: "status"; status: number; retryAfterS?: number; body?: string }
  /** Drops the connection without answering. */
  | { kind: "drop" };

/** Faults queued for the next requests, in order; each is used once. */
export class FaultQueue {
  readonly #queue: Fault[] = [];

  push(...faults: Fault[]): void {
    this.#queue.push(...faults);
  }

  /** Answers the request with the next fault, if any; true when it did. */
  serve(response: ServerResponse): boolean {
    const fault = this.#queue.shift();
    if (!fault) return false;
    if (fault.kind === "drop") {
      response.socket?.destroy();
      return true;
    }
    response.writeHead(fault.status, {
      "content-type": "application/json",
      ...(fault.retryAfterS !== undefined ? { "retry-after": String(fault.retryAfterS) } : {}),
    });
    response.end(fault.body ?? JSON.stringify({ error: `injected ${fault.status}` }));
    return true;
  }
}

/** One request as an emulator's handler sees it: the API key comes as a bearer token or `?api_key=`. */
export interface EmulatedRequest {
  method: string;
  url: URL;
  key: string | null;
  body: string;
}

export type Reply = (status: number, body: unknown, contentType?: string) => void;

/**
 * An HTTP server on a free loopback port that answers queued faults first, then `handle`.
 * Returns its origin (`http://127.0.0.1:PORT`) and how to stop it.
 */
export async function startEmulatorServer(
  faults: FaultQueue,
  handle: (request: EmulatedRequest, reply: Reply) => Promise<void> | void,
): Promise<{ origin: string; close: () => Promise<void> }> {
  const server = createServer((request, response) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      if (faults.serve(response)) return;
      const url = new URL(request.url ?? "/", "http://emulator");
      const reply: Reply = (status, body, contentType = "application/json") => {
        response.writeHead(status, status === 204 ? {} : { "content-type": contentType });
        response.end(status === 204 ? undefined : JSON.stringify(body));
      };
      await handle(
        {
          method: request.method ?? "GET",
          url,
          key: request.headers.authorization?.replace(/^Bearer\s+/i, "") ?? url.searchParams.get("api_key"),
          body: Buffer.concat(chunks).toString("utf8"),
        },
        reply,
      );
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
