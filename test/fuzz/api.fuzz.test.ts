import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";

/**
 * Property-based tests of every route in the OpenAPI document: generated path parameters, query
 * strings, headers, bodies (schema-shaped and not) and, for upload routes, multipart forms shaped by
 * their documented parts (hostile file names and contents) never get a 5xx, every 4xx carries the error
 * shape, and a rejected request changes nothing. `HANGAR_FUZZ_RUNS` sets the cases per route (20 here;
 * the full run in docs/testing.md uses 500) and `HANGAR_FUZZ_SEED` replays a failure.
 */
const RUNS = Number(process.env.HANGAR_FUZZ_RUNS ?? 20);
const SEED = Number(process.env.HANGAR_FUZZ_SEED ?? 20261127);

interface Operation {
  method: string;
  path: string;
  pathParams: string[];
  query: { name: string; schema: JsonSchema }[];
  body: JsonSchema | null;
  /** A multipart route's documented form: its file and field parts. */
  form: JsonSchema | null;
}

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  const?: unknown;
  format?: string;
}

/** Values that break naive handlers: traversal, NUL, huge, unicode, numbers out of range, known ids. */
const hostileString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom(
    "",
    "..",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "C:\\\\Windows",
    "nb_\u0000x",
    "%00",
    "%2e%2e%2f",
    "org_default",
    "user_admin",
    "run_00000000000000000000000000000000",
    "💥🧪",
    "\u202e",
    "x".repeat(5_000),
    "NaN",
    "-1",
    "1e309",
    "true",
    "null",
    "{}",
    "' OR 1=1 --",
  ),
);

const anyJson = fc.jsonValue({ maxDepth: 4 });

/** A value shaped by a (TypeBox-made) JSON schema about half the time, anything otherwise. */
function valueFor(schema: JsonSchema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!schema || depth > 4) return anyJson;
  const shaped = (): fc.Arbitrary<unknown> => {
    if (schema.const !== undefined) return fc.constant(schema.const);
    if (schema.enum) return fc.constantFrom(...schema.enum);
    if (schema.anyOf) return fc.oneof(...schema.anyOf.map((s) => valueFor(s, depth + 1)));
    const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
    switch (type) {
      case "string":
        return hostileString;
      case "integer":
        return fc.oneof(fc.integer(), fc.constantFrom(0, -1, 2 ** 53, 1e12));
      case "number":
        return fc.oneof(fc.double(), fc.constantFrom(0, -1, 1e308, 0.000_000_1));
      case "boolean":
        return fc.boolean();
      case "array":
        return fc.array(valueFor(schema.items, depth + 1), { maxLength: 5 });
      case "object":
        return objectFor(schema, depth);
      default:
        return anyJson;
    }
  };
  return fc.oneof({ arbitrary: shaped(), weight: 3 }, { arbitrary: anyJson, weight: 1 });
}

function objectFor(schema: JsonSchema, depth: number): fc.Arbitrary<unknown> {
  const properties = Object.entries(schema.properties ?? {});
  const record = Object.fromEntries(properties.map(([name, s]) => [name, valueFor(s, depth + 1)]));
  const extra = fc.oneof(
    { arbitrary: fc.constant({}), weight: 4 },
    { arbitrary: fc.dictionary(hostileString, anyJson, { maxKeys: 2 }), weight: 1 },
  );
  return fc
    .tuple(fc.record(record, { requiredKeys: [] }), extra)
    .map(([known, unknown]) => ({ ...known, ...unknown }));
}

function operationsOf(doc: { paths: Record<string, Record<string, Record<string, unknown>>> }): Operation[] {
  const operations: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    // No input to fuzz, or a stream that stays open by design.
    if (["/healthz", "/metrics", "/agent.mjs"].includes(path)) continue;
    for (const [method, operation] of Object.entries(methods)) {
      if (method === "parameters") continue;
      const parameters = (operation.parameters ?? []) as { name: string; in: string; schema: JsonSchema }[];
      const content = (
        operation.requestBody as { content?: Record<string, { schema: JsonSchema }> } | undefined
      )?.content;
      operations.push({
        method: method.toUpperCase(),
        path,
        pathParams: [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!),
        query: parameters.filter((p) => p.in === "query").map((p) => ({ name: p.name, schema: p.schema })),
        // An upload route also gets JSON and raw bodies, which it must refuse cleanly.
        body: content?.["application/json"]?.schema ?? (content ? {} : null),
        form: content?.["multipart/form-data"]?.schema ?? null,
      });
    }
  }
  return operations;
}

/** File contents that break naive upload handlers: binary, broken JSON, BOMs, notebooks of other versions. */
const fileBytes = fc.oneof(
  fc.uint8Array({ maxLength: 2_000 }),
  fc.string({ maxLength: 200 }).map((text) => new TextEncoder().encode(text)),
  fc
    .constantFrom(
      "",
      "{",
      "\uFEFF{}",
      '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}',
      '\uFEFF{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}',
      '{"nbformat": 3, "worksheets": []}',
      '{"nbformat": 4, "cells": "no"}',
      "name,smiles\r\naspirin,CC(=O)OC1=CC=CC=C1C(=O)O\r\n",
      "smiles;name\nC;x\n",
      "\u0000\u0000",
    )
    .map((text) => new TextEncoder().encode(text)),
);

/** One multipart part: a documented field or an undocumented one, a file or a plain value. */
const formPart = (names: string[]) =>
  fc.record({
    field: fc.oneof(
      { arbitrary: fc.constantFrom(...names), weight: 4 },
      { arbitrary: hostileString, weight: 1 },
    ),
    fileName: fc.oneof(
      fc.constant(null),
      hostileString,
      fc.constantFrom("a.ipynb", "data/x.csv", "../x.ipynb"),
    ),
    bytes: fileBytes,
  });

/** Headers beside auth and content type: caching, ranges, proxies, encodings, with odd values. */
const headerValue = fc.oneof(
  fc.string({ maxLength: 30 }).map((v) => v.replace(/[^\x20-\x7e]/g, "")),
  fc.constantFrom(
    "",
    "*",
    "bytes=0-",
    "bytes=999999999-",
    "gzip, br",
    "../../x",
    "x".repeat(4_000),
    "-1",
    "0",
  ),
);
const extraHeaders = fc.dictionary(
  fc.constantFrom(
    "accept",
    "accept-encoding",
    "accept-language",
    "range",
    "if-none-match",
    "if-modified-since",
    "x-forwarded-for",
    "x-request-id",
    "origin",
    "cookie",
    "user-agent",
    "transfer-encoding-x",
  ),
  headerValue,
  { maxKeys: 3 },
);

/** Counts of everything a request could create or remove, read through the API as the admin. */
async function fingerprint(server: ServerProcess): Promise<Record<string, number>> {
  const get = async (path: string) => {
    const response = await fetch(`${server.url}${path}`, {
      headers: { authorization: `Bearer ${TEST_API_KEY}` },
    });
    assert.equal(response.status, 200, `${path}: ${response.status}`);
    return response.json() as Promise<Record<string, unknown[]>>;
  };
  return {
    notebooks: (await get("/api/v1/notebooks?limit=1000")).notebooks!.length,
    datasets: (await get("/api/v1/datasets?limit=1000")).datasets!.length,
    runs: (await get("/api/v1/runs?limit=1000")).runs!.length,
    batches: (await get("/api/v1/batches")).batches!.length,
    api_keys: (await get("/api/v1/orgs/org_default/api-keys")).api_keys!.length,
    members: (await get("/api/v1/orgs/org_default/members")).members!.length,
    orgs: ((await get("/api/v1/me")) as unknown as { orgs: unknown[] }).orgs.length,
    ledger: (await get("/api/v1/orgs/org_default/credits?limit=1000")).entries!.length,
    budgets: (await get("/api/v1/orgs/org_default/budgets")).budgets!.length,
    credentials: ((await get("/api/v1/providers")).providers as { configured_by: string | null }[]).filter(
      (p) => p.configured_by === "org",
    ).length,
  };
}

/** Which counts a route may change when it succeeds. */
const TOUCHES: [RegExp, string[]][] = [
  [/^POST \/api\/v1\/notebooks$/, ["notebooks"]],
  [/^POST \/api\/v1\/datasets$/, ["datasets"]],
  [/^POST \/api\/v1\/(notebooks\/\{id\}\/runs|predict)$/, ["runs", "ledger"]],
  [/^POST \/api\/v1\/predict\/batch$/, ["batches", "ledger"]],
  [/api-keys/, ["api_keys"]],
  [/members|invitations/, ["members"]],
  [/^POST \/api\/v1\/orgs$/, ["orgs"]],
  [/credits/, ["ledger"]],
  [/budgets/, ["budgets"]],
  [/providers\/\{name\}\/credentials/, ["credentials"]],
];

describe("fuzzing every route from the OpenAPI document", { timeout: 600_000 }, () => {
  let server: ServerProcess;
  let operations: Operation[];

  before(async () => {
    server = await spawnServer({
      HANGAR_RATE_LIMIT_PER_MINUTE: "0",
      HANGAR_ORG_RATE_LIMIT_PER_MINUTE: "0",
      HANGAR_LOGIN_RATE_LIMIT_PER_MINUTE: "0",
      // No agents: fuzzed runs that happen to be accepted stay queued, and nothing else changes state.
      HANGAR_LOCAL_MAX_INSTANCES: "1",
    });
    operations = operationsOf(
      (await (await fetch(`${server.url}/openapi.json`)).json()) as Parameters<typeof operationsOf>[0],
    );
  });
  after(() => stopServer(server));

  it("answers every generated request below 500, with the error shape on every 4xx, and rejected requests change nothing", async () => {
    assert.ok(operations.length > 40, `the document lists ${operations.length} operations`);
    const before = await fingerprint(server);
    const changed = new Set<string>();
    const statuses = new Map<number, number>();
    for (const operation of operations) {
      const request = fc.record({
        params: fc.tuple(...operation.pathParams.map(() => hostileString)),
        query: fc.record(Object.fromEntries(operation.query.map((q) => [q.name, valueFor(q.schema)])), {
          requiredKeys: [],
        }),
        body: operation.body === null ? fc.constant(undefined) : valueFor(operation.body),
        contentType: fc.constantFrom(
          "application/json",
          "application/json",
          "text/plain",
          "multipart/form-data",
          null,
        ),
        rawBody: fc.oneof(
          { arbitrary: fc.constant(null), weight: 4 },
          {
            arbitrary: fc.constantFrom("{", "\u0000", "[".repeat(5_000), "\uFFFF\uD800", '{"a":1}{"a":2}'),
            weight: 1,
          },
        ),
        auth: fc.constantFrom(TEST_API_KEY, TEST_API_KEY, TEST_API_KEY, null, "hgr_wrong", "a.b.c"),
        headers: extraHeaders,
        upload:
          operation.form === null
            ? fc.constant(null)
            : fc.option(fc.array(formPart(Object.keys(operation.form.properties ?? {})), { maxLength: 4 }), {
                nil: null,
                freq: 4,
              }),
      });
      await fc.assert(
        fc.asyncProperty(request, async (input) => {
          let path = operation.path;
          operation.pathParams.forEach((name, i) => {
            path = path.replace(`{${name}}`, encodeURIComponent(String(input.params[i])));
          });
          const query = new URLSearchParams();
          for (const [name, value] of Object.entries(input.query)) {
            query.set(name, typeof value === "string" ? value : JSON.stringify(value));
          }
          const headers: Record<string, string> = { ...input.headers };
          if (input.auth) headers.authorization = `Bearer ${input.auth}`;
          let body: string | FormData | undefined;
          if (input.upload !== null && input.rawBody === null) {
            // fetch writes the multipart boundary into the content type itself.
            const form = new FormData();
            for (const part of input.upload) {
              if (part.fileName === null) form.append(part.field, new TextDecoder().decode(part.bytes));
              else form.append(part.field, new Blob([part.bytes]), part.fileName);
            }
            body = form;
          } else if (operation.method !== "GET" && operation.method !== "DELETE") {
            body = input.rawBody ?? (input.body === undefined ? undefined : JSON.stringify(input.body));
            if (input.contentType && body !== undefined) headers["content-type"] = input.contentType;
          }
          const url = `${server.url}${path}${query.size > 0 ? `?${query}` : ""}`;
          const response = await fetch(url, { method: operation.method, headers, body });
          const text = await response.text();
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          const what = `${operation.method} ${url.slice(server.url.length, 300)} → ${response.status} ${text.slice(0, 300)}`;
          assert.ok(response.status < 500, what);
          if (response.status >= 400) {
            const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
            assert.equal(typeof parsed.error?.code, "string", what);
            assert.equal(typeof parsed.error?.message, "string", what);
          } else if (operation.method !== "GET") {
            const route = `${operation.method} ${operation.path}`;
            for (const [pattern, resources] of TOUCHES) {
              if (pattern.test(route)) for (const resource of resources) changed.add(resource);
            }
          }
        }),
        { numRuns: RUNS, seed: SEED, endOnFailure: true },
      );
    }
    const after = await fingerprint(server);
    for (const [resource, count] of Object.entries(before)) {
      if (!changed.has(resource))
        assert.equal(after[resource], count, `${resource} changed though no request touching it succeeded`);
    }
    assert.ok((statuses.get(400) ?? 0) + (statuses.get(404) ?? 0) > 0, "most generated requests are refused");
  });
});
