import { PostgresDialect } from "kysely";
import pg from "pg";

const INT8_OID = 20;

/** Timestamps are bigint milliseconds: well inside Number's exact range, so parse them as numbers. */
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export interface PostgresOptions {
  connectionString: string;
  /** Confines every unqualified table to this schema (tests use one schema each). */
  schema?: string;
  maxConnections?: number;
}

function assertIdentifier(schema: string): string {
  if (!/^[a-z_][a-z0-9_]*$/i.test(schema)) throw new Error(`Invalid PostgreSQL schema name "${schema}"`);
  return schema;
}

export function createPostgresDialect(options: PostgresOptions): PostgresDialect {
  return new PostgresDialect({
    pool: new pg.Pool({
      connectionString: options.connectionString,
      max: options.maxConnections ?? 10,
      types,
      ...(options.schema ? { options: `-c search_path=${assertIdentifier(options.schema)}` } : {}),
    }),
  });
}
