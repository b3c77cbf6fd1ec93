import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from "kysely";

/**
 * Kysely's own SQLite dialect targets better-sqlite3, a native addon. Node 24's built-in
 * `node:sqlite` needs no compiler, so this is a small driver for it. Two choices matter:
 * - every transaction starts with BEGIN IMMEDIATE, taking the write lock up front, so concurrent
 *   processes never deadlock upgrading a read lock (the queue's claim relies on this);
 * - SQLite's own busy handler would block the event loop while it waits (and deadlock two stores in
 *   one process), so the busy timeout is 0 and lock waits are retried here, asynchronously.
 */
const SQLITE_BUSY = 5;
const LOCK_WAIT_MS = 30_000;

const toSqlite = (value: unknown): SQLInputValue =>
  typeof value === "boolean" ? Number(value) : (value as SQLInputValue);

/** Extended codes (e.g. 517, SQLITE_BUSY_SNAPSHOT) carry the primary code in their low byte. */
const isBusy = (error: unknown): boolean =>
  typeof error === "object" &&
  error !== null &&
  ((error as { errcode?: number }).errcode ?? 0) % 256 === SQLITE_BUSY;

class NodeSqliteConnection implements DatabaseConnection {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, { statement: StatementSync; reader: boolean }>();
  inTransaction = false;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  #prepare(sql: string): { statement: StatementSync; reader: boolean } {
    let prepared = this.#statements.get(sql);
    if (!prepared) {
      const statement = this.#db.prepare(sql);
      prepared = { statement, reader: statement.columns().length > 0 };
      // Claims and heartbeats repeat a few statements; caching them skips re-parsing.
      if (this.#statements.size < 500) this.#statements.set(sql, prepared);
    }
    return prepared;
  }

  #run<R>(sql: string, parameters: readonly unknown[]): QueryResult<R> {
    const { statement, reader } = this.#prepare(sql);
    const values = parameters.map(toSqlite);
    if (reader) return { rows: statement.all(...values) as R[] };
    const { changes, lastInsertRowid } = statement.run(...values);
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let wait = 1; ; wait = Math.min(wait * 2, 25)) {
      try {
        return this.#run<R>(compiled.sql, compiled.parameters);
      } catch (error) {
        // Inside a transaction we already hold the write lock; BUSY there is a real error.
        if (!isBusy(error) || this.inTransaction || Date.now() > deadline) throw error;
        await sleep(wait * (0.5 + Math.random()));
      }
    }
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const { statement } = this.#prepare(compiled.sql);
    for (const row of statement.iterate(...compiled.parameters.map(toSqlite))) yield { rows: [row as R] };
  }

  close(): void {
    this.#db.close();
  }
}

/** One connection per store, handed out in turn. */
class NodeSqliteDriver implements Driver {
  readonly #filename: string;
  #connection: NodeSqliteConnection | undefined;
  #queue: Promise<void> = Promise.resolve();
  #release: (() => void) | undefined;

  constructor(filename: string) {
    this.#filename = filename;
  }

  async init(): Promise<void> {
    const db = new DatabaseSync(this.#filename, { timeout: 0 });
    this.#connection = new NodeSqliteConnection(db);
    for (const pragma of ["journal_mode = wal", "synchronous = normal", "foreign_keys = on"]) {
      await this.#connection.executeQuery(CompiledQuery.raw(`pragma ${pragma}`));
    }
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const previous = this.#queue;
    let release!: () => void;
    this.#queue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    this.#release = release;
    return this.#connection!;
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await this.#exec(connection, "begin immediate");
    (connection as NodeSqliteConnection).inTransaction = true;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    try {
      await this.#exec(connection, "commit");
    } finally {
      (connection as NodeSqliteConnection).inTransaction = false;
    }
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    try {
      await this.#exec(connection, "rollback");
    } finally {
      (connection as NodeSqliteConnection).inTransaction = false;
    }
  }

  async destroy(): Promise<void> {
    this.#connection?.close();
    this.#connection = undefined;
  }

  async #exec(connection: DatabaseConnection, sql: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(sql));
  }
}

/** SQLite runs DDL inside transactions, so migrations take the write lock and run once across processes. */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export function createNodeSqliteDialect(filename: string): Dialect {
  return {
    createAdapter: () => new TransactionalDdlSqliteAdapter(),
    createDriver: () => new NodeSqliteDriver(filename),
    createQueryCompiler: () => new SqliteQueryCompiler(),
    createIntrospector: (db) => new SqliteIntrospector(db),
  };
}
