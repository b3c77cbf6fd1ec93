import { join } from "node:path";
import { createPostgresStore } from "./postgres/index.ts";
import { createSqliteStore } from "./sqlite/index.ts";
import type { Store } from "./store.ts";

/** SQLite under the data directory unless DATABASE_URL names a PostgreSQL server. */
export function openStore(options: {
  databaseUrl?: string | undefined;
  /** PostgreSQL schema to keep Hangar's tables in (HANGAR_DATABASE_SCHEMA); the server's default otherwise. */
  schema?: string | undefined;
  dataDir: string;
}): Store {
  const url = options.databaseUrl;
  if (url && /^postgres(ql)?:\/\//.test(url)) {
    return createPostgresStore({
      connectionString: url,
      ...(options.schema ? { schema: options.schema } : {}),
    });
  }
  if (url?.startsWith("sqlite:")) return createSqliteStore(url.slice("sqlite:".length));
  if (url)
    throw new Error(`DATABASE_URL must start with postgres://, postgresql:// or sqlite: (got "${url}")`);
  return createSqliteStore(join(options.dataDir, "hangar.sqlite"));
}
