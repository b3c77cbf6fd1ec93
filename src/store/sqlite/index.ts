import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { Kysely } from "kysely";
import { KyselyStore } from "../kysely-store.ts";
import type { Database } from "../schema.ts";
import type { Store } from "../store.ts";
import { createNodeSqliteDialect } from "./sqlite-dialect.ts";

export function createSqliteStore(filename: string): Store {
  if (filename !== ":memory:") mkdirSync(dirname(filename), { recursive: true });
  const db = new Kysely<Database>({ dialect: createNodeSqliteDialect(filename) });
  return new KyselyStore("sqlite", db, { skipLocked: false, multiHost: false, namedSchemas: false });
}
