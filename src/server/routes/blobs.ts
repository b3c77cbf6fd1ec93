import { Readable, Transform } from "node:stream";
import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/context.ts";
import type { FsBlobStore } from "../../blob/fs/fs-blob-store.ts";
import { badRequest, payloadTooLarge } from "../../domain/errors.ts";

/**
 * Serves the filesystem store's signed URLs. The key comes from the raw path, decoded segment by
 * segment, so `..` or `%2e%2e` reach the key check instead of being resolved away by URL parsing.
 */
export function blobRoutes(ctx: AppContext, store: FsBlobStore) {
  return async (app: FastifyInstance) => {
    app.removeAllContentTypeParsers();
    app.addContentTypeParser("*", (_request, payload, done) => done(null, payload));

    const keyOf = (url: string): string => {
      const path = url.split("?")[0]!.slice("/blobs/".length);
      try {
        return path.split("/").map(decodeURIComponent).join("/");
      } catch {
        throw badRequest("invalid_blob_path", "The blob path is not valid percent-encoding");
      }
    };
    const query = (q: unknown) => q as { expires?: string; sig?: string };

    app.get("/blobs/*", { schema: { hide: true } }, async (request, reply) => {
      const key = keyOf(request.url);
      const { expires, sig } = query(request.query);
      store.verifySignedRequest("GET", key, expires, sig);
      const object = await store.stat(key);
      const stream = await store.get(key);
      return reply
        .type("application/octet-stream")
        .header("content-length", object?.size ?? undefined)
        .send(stream);
    });

    app.put("/blobs/*", { schema: { hide: true } }, async (request, reply) => {
      const key = keyOf(request.url);
      const { expires, sig } = query(request.query);
      store.verifySignedRequest("PUT", key, expires, sig);
      const limit = ctx.config.maxUploadBytes;
      let seen = 0;
      const capped = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          seen += chunk.length;
          if (seen > limit) callback(payloadTooLarge(`Upload exceeds the ${limit}-byte limit`, { limit }));
          else callback(null, chunk);
        },
      });
      // An empty body (an empty output file) reaches no content parser, so there is no stream.
      const body = (request.body as NodeJS.ReadableStream | undefined) ?? Readable.from([]);
      body.pipe(capped);
      body.on("error", (error) => capped.destroy(error));
      const object = await store.put(key, capped);
      return reply.code(201).send({ key: object.key, size: object.size });
    });
  };
}
