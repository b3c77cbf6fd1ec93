import type { IncomingMessage } from "node:http";
import pino, { type DestinationStream, type Logger } from "pino";

/** A signed URL's signature is a bearer credential until it expires, so logs never carry it. */
export function redactSignature(url: string): string {
  return url.replace(/([?&]sig=)[^&#]*/g, "$1[redacted]");
}

type LoggedRequest = IncomingMessage & { ip?: string; host?: string };

/** The server's structured JSON logger; request lines carry the request id Fastify assigns. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "hangar" },
      redact: ["req.headers.authorization"],
      serializers: {
        req: (request: LoggedRequest) => ({
          method: request.method,
          url: redactSignature(request.url ?? ""),
          host: request.host,
          remoteAddress: request.ip,
        }),
      },
    },
    destination,
  );
}
