import type { FastifyError, FastifyInstance } from "fastify";
import { HangarError } from "../domain/errors.ts";

interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

const body = (code: string, message: string, details: unknown = null): ErrorBody => ({
  error: { code, message, details },
});

/** Every failure leaves as `{"error":{"code","message","details"}}` with a stable code. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((request, reply) => {
    void reply
      .code(404)
      .send(body("route_not_found", `No route for ${request.method} ${request.url.split("?")[0]}`));
  });
  app.setErrorHandler((error: FastifyError | HangarError | Error, request, reply) => {
    if (error instanceof HangarError) {
      return reply.code(error.status).send(body(error.code, error.message, error.details ?? null));
    }
    const fastifyError = error as FastifyError;
    if (fastifyError.validation) {
      return reply.code(400).send(
        body("validation_failed", `Invalid request: ${fastifyError.message}`, {
          issues: fastifyError.validation,
        }),
      );
    }
    switch (fastifyError.code) {
      case "FST_ERR_CTP_INVALID_JSON_BODY":
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        return reply
          .code(400)
          .send(body("invalid_json", `The request body is not valid JSON: ${error.message}`));
      case "FST_ERR_CTP_BODY_TOO_LARGE":
      case "FST_REQ_FILE_TOO_LARGE":
      case "FST_FILES_LIMIT":
        return reply.code(413).send(body("payload_too_large", error.message));
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        return reply.code(415).send(body("unsupported_media_type", error.message));
      case "FST_INVALID_MULTIPART_CONTENT_TYPE":
        return reply.code(400).send(body("not_multipart", "This route takes a multipart/form-data upload"));
    }
    if (fastifyError.statusCode && fastifyError.statusCode < 500) {
      return reply.code(fastifyError.statusCode).send(body("bad_request", error.message));
    }
    request.log.error({ err: error }, "unhandled error");
    return reply
      .code(500)
      .send(body("internal_error", "Internal server error; see the server log for the request id"));
  });
}
