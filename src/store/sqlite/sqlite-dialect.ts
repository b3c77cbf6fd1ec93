import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
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
 * `node:sqlite` needs no compiler, so this is a small driver for it. The choices that matter:
 * - every transaction starts with BEGIN IMMEDIATE, taking the write lock up front, so concurrent
 *   processes never deadlock upgrading a read lock (the queue's claim relies on this);
 * - SQLite's own busy handler would block the event loop while it waits (and deadlock two stores in
 *   one process), so the busy timeout is 0 and lock waits are retried here, asynchronously;
 * - node:sqlite runs each statement synchronously, so a long write transaction (a packed unit's
 *   64 finishes) would hold every request: a transaction yields to the event loop every few
 *   milliseconds, and plain SELECTs outside transactions read from a second connection, which WAL
 *   lets read the last commit while the writer's transaction is open;
 * - SQLite checkpoints its WAL in the committing connection by default: a commit that crossed 1,000
 *   pages copied them back and fsynced for up to 160 ms. A worker thread checkpoints instead.
 */
const SQLITE_BUSY = 5;
const LOCK_WAIT_MS = 30_000;
/** How long a transaction may run statements before it lets other requests in. */
const TRANSACTION_SLICE_MS = 2;

const toSqlite = (value: unknown): SQLInputValue =>
  typeof value === "boolean" ? Number(value) : (value as SQLInputValue);

/** Extended codes (e.g. 517, SQLITE_BUSY_SNAPSHOT) carry the primary code in their low byte. */
const isBusy = (error: unknown): boolean =>
  typeof error === "object" &&
  error !== null &&
  ((error as { errcode?: number }).errcode ?? 0) % 256 === SQLITE_BUSY;

const CHECKPOINT_INTERVAL_MS = 500;

/** The checkpointing thread: its own connection, PASSIVE checkpoints, which never wait for writers. */
const CHECKPOINTER = `
const { workerData } = require("node:worker_threads");
const { DatabaseSync } = require("node:sqlite");
const db = new DatabaseSync(workerData.filename, { timeout: 1000 });
setInterval(() => {
  try {
    db.exec("pragma wal_checkpoint(passive)");
  } catch {}
}, workerData.intervalMs);
`;

/** A statement that only reads (Kysely compiles every selectFrom to a leading `select`). */
const isPlainSelect = (sql: string) => /^\s*select\b/i.test(sql);

/** One SQLite connection and its prepared statements. */
class SqliteHandle {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, { statement: StatementSync; reader: boolean }>();

  constructor(filename: string) {
    this.#db = new DatabaseSync(filename, { timeout: 0 });
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

  run<R>(compiled: CompiledQuery): QueryResult<R> {
    const { statement, reader } = this.#prepare(compiled.sql);
    const values = compiled.parameters.map(toSqlite);
    if (reader) return { rows: statement.all(...values) as R[] };
    const { changes, lastInsertRowid } = statement.run(...values);
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
  }

  /** Runs `compiled`, waiting out other processes' locks (never ours: inside a transaction BUSY is an error). */
  async runWaiting<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let wait = 1; ; wait = Math.min(wait * 2, 25)) {
      try {
        return this.run<R>(compiled);
      } catch (error) {
        if (!isBusy(error) || Date.now() > deadline) throw error;
        await sleep(wait * (0.5 + Math.random()));
      }
    }
  }

  /** Whether a transaction is open on this connection (SQLite's own answer). */
  get inTransaction(): boolean {
    return this.#db.isTransaction;
  }

  close(): void {
    this.#db.close();
  }
}

/** A Kysely connection: a session on the driver's writer (under its lock) or reader connection. */
class NodeSqliteSession implements DatabaseConnection {
  readonly #driver: NodeSqliteDriver;
  inTransaction = false;
  #sliceStarted = 0;

  constructor(driver: NodeSqliteDriver) {
    this.#driver = driver;
  }

  beganTransaction(): void {
    this.inTransaction = true;
    this.#sliceStarted = performance.now();
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    if (!this.inTransaction) return this.#driver.runAlone<R>(compiled);
    if (performance.now() - this.#sliceStarted > TRANSACTION_SLICE_MS) {
      await setImmediate();
      this.#sliceStarted = performance.now();
    }
    return this.#driver.writer.run<R>(compiled);
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    yield await this.executeQuery<R>(compiled);
  }
}

/**
 * One writer connection, taken by one transaction or statement at a time, and (for a database in a
 * file) one reader connection for plain SELECTs outside transactions.
 */
class NodeSqliteDriver implements Driver {
  readonly #filename: string;
  #writer: SqliteHandle | undefined;
  #reader: SqliteHandle | undefined;
  #checkpointer: Worker | undefined;
  #writeQueue: Promise<void> = Promise.resolve();
  /** Each open transaction's hand-on of the writer. */
  readonly #transactionRelease = new WeakMap<DatabaseConnection, () => void>();

  constructor(filename: string) {
    this.#filename = filename;
  }

  get writer(): SqliteHandle {
    return this.#writer!;
  }

  async init(): Promise<void> {
    this.#writer = new SqliteHandle(this.#filename);
    for (const pragma of ["journal_mode = wal", "synchronous = normal", "foreign_keys = on"]) {
      await this.#writer.runWaiting(CompiledQuery.raw(`pragma ${pragma}`));
    }
    // A second connection to ":memory:" would be another, empty database.
    if (this.#filename === ":memory:" || this.#filename === "") return;
    this.#reader = new SqliteHandle(this.#filename);
    await this.#writer.runWaiting(CompiledQuery.raw("pragma wal_autocheckpoint = 0"));
    this.#checkpointer = new Worker(CHECKPOINTER, {
      eval: true,
      workerData: { filename: this.#filename, intervalMs: CHECKPOINT_INTERVAL_MS },
    });
    this.#checkpointer.unref();
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    return new NodeSqliteSession(this);
  }

  async releaseConnection(): Promise<void> {}

  /** Waits for the writer; returns the function that hands it on. */
  async #lockWriter(): Promise<() => void> {
    const previous = this.#writeQueue;
    let release!: () => void;
    this.#writeQueue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    return release;
  }

  /** A statement outside any transaction: a plain SELECT on the reader, anything else on the writer. */
  async runAlone<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    if (this.#reader && isPlainSelect(compiled.sql)) return this.#reader.runWaiting<R>(compiled);
    const release = await this.#lockWriter();
    try {
      return await this.#writer!.runWaiting<R>(compiled);
    } finally {
      release();
    }
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    const release = await this.#lockWriter();
    try {
      await this.#writer!.runWaiting(CompiledQuery.raw("begin immediate"));
    } catch (error) {
      release();
      throw error;
    }
    this.#transactionRelease.set(connection, release);
    (connection as NodeSqliteSession).beganTransaction();
  }

  /** A failed commit keeps the writer: Kysely rolls back next, and nobody may slip in between. */
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    this.#writer!.run(CompiledQuery.raw("commit"));
    this.#handOn(connection);
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    try {
      // Some errors (a full disk, an interrupt) have already rolled SQLite's transaction back.
      if (this.#writer!.inTransaction) this.#writer!.run(CompiledQuery.raw("rollback"));
    } finally {
      this.#handOn(connection);
    }
  }

  #handOn(connection: DatabaseConnection): void {
    (connection as NodeSqliteSession).inTransaction = false;
    this.#transactionRelease.get(connection)?.();
    this.#transactionRelease.delete(connection);
  }

  async destroy(): Promise<void> {
    await this.#checkpointer?.terminate();
    this.#checkpointer = undefined;
    this.#writer?.close();
    this.#reader?.close();
    this.#writer = undefined;
    this.#reader = undefined;
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
