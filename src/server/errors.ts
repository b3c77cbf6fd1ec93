import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { HangarError } from "../domain/errors.ts";

interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

const body = (code: string, message: string, details: unknown = null): ErrorBody => ({
  error: { code, message, details },
});

/** Every failure leaves as `{"error":{"code","message","details"}}` with a stable code. */
const MALFORMED_MULTIPART =
  /^(Multipart: Boundary not found|Unexpected end of multipart data|\w+ terminated early due to unexpected end of multipart data)$/;

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
    // Busboy (under @fastify/multipart) reports a malformed multipart body with plain Errors; these
    // are its messages for a missing boundary and a body that ends mid-part.
    if (MALFORMED_MULTIPART.test(error.message)) {
      return reply
        .code(400)
        .send(body("invalid_multipart", `The multipart body is malformed: ${error.message}`));
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

/**
 * Fastify answers a few failures before routing (a path that is not valid percent-encoding, an
 * over-long path parameter) with its own body and none of the hooks; this keeps them in the same
 * error shape and with the x-request-id header. Pass as the `frameworkErrors` server option.
 */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  void reply.header("x-request-id", request.id);
  if (error.code === "FST_ERR_BAD_URL") {
    void reply
      .code(400)
      .send(body("invalid_url", `The request path is not valid percent-encoding: ${error.message}`));
    return;
  }
  if (error.code === "FST_ERR_MAX_PARAM_LENGTH") {
    void reply.code(414).send(body("uri_too_long", error.message));
    return;
  }
  request.log.error({ err: error }, "framework error");
  void reply
    .code(500)
    .send(body("internal_error", "Internal server error; see the server log for the request id"));
}
