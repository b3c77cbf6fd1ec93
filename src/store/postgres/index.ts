import { Kysely } from "kysely";
import { KyselyStore } from "../kysely-store.ts";
import type { Database } from "../schema.ts";
import type { Store } from "../store.ts";
import { createPostgresDialect, type PostgresOptions } from "./postgres-dialect.ts";

export function createPostgresStore(options: PostgresOptions): Store {
  const db = new Kysely<Database>({ dialect: createPostgresDialect(options) });
  return new KyselyStore(
    "postgres",
    db,
    { skipLocked: true, multiHost: true, namedSchemas: true },
    options.schema,
  );
}
