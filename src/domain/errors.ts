/**
 * The one error type that crosses layers. `code` is stable and documented; `status` is the HTTP
 * status the API answers with, so adapters can raise domain errors without knowing about HTTP.
 */
export class HangarError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(status: number, code: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "HangarError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const badRequest = (code: string, message: string, details?: Record<string, unknown>) =>
  new HangarError(400, code, message, details);
export const unauthorized = (message: string) => new HangarError(401, "unauthorized", message);
export const forbidden = (code: string, message: string) => new HangarError(403, code, message);
export const notFound = (code: string, message: string, details?: Record<string, unknown>) =>
  new HangarError(404, code, message, details);
export const conflict = (code: string, message: string, details?: Record<string, unknown>) =>
  new HangarError(409, code, message, details);
export const payloadTooLarge = (message: string, details?: Record<string, unknown>) =>
  new HangarError(413, "payload_too_large", message, details);
export const unprocessable = (code: string, message: string, details?: Record<string, unknown>) =>
  new HangarError(422, code, message, details);
export const tooManyRequests = (limit: string, retryAfterS: number) =>
  new HangarError(429, "rate_limited", `Too many requests for this ${limit}: retry in ${retryAfterS} s`, {
    limit,
    retry_after_s: retryAfterS,
  });
/** A request that cannot be served yet; the caller retries it as it would a server restart. */
export const notReady = (code: string, message: string) => new HangarError(503, code, message);
