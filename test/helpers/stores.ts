import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { newId } from "../../src/domain/ids.ts";
import { createPostgresStore } from "../../src/store/postgres/index.ts";
import { createSqliteStore } from "../../src/store/sqlite/index.ts";
import type { NewJob, Store } from "../../src/store/store.ts";

export const TEST_DATABASE_URL =
  process.env.HANGAR_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export interface StoreFixture {
  /** Opens another store on the same database, as a second server process would. */
  open(): Store;
  /** What a server process needs to reach the same database. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export interface DialectUnderTest {
  name: "sqlite" | "postgres";
  fixture(): Promise<StoreFixture>;
}

async function sqliteFixture(): Promise<StoreFixture> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-store-"));
  const file = join(dir, "hangar.sqlite");
  const opened: Store[] = [];
  return {
    env: { DATABASE_URL: `sqlite:${file}` },
    open() {
      const store = createSqliteStore(file);
      opened.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One schema per fixture keeps parallel test files apart on the shared `test` database. */
async function postgresFixture(): Promise<StoreFixture> {
  const schema = `t_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  await admin.end();
  const opened: Store[] = [];
  return {
    env: { DATABASE_URL: TEST_DATABASE_URL, HANGAR_DATABASE_SCHEMA: schema },
    open() {
      const store = createPostgresStore({ connectionString: TEST_DATABASE_URL, schema });
      opened.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      await client.query(`drop schema ${schema} cascade`);
      await client.end();
    },
  };
}

export const DIALECTS: DialectUnderTest[] = [
  { name: "sqlite", fixture: sqliteFixture },
  { name: "postgres", fixture: postgresFixture },
];

/** A notebook job of `orgId` submitted by `user_a`, with no backoff, to enqueue in store tests. */
export function notebookJob(orgId: string, overrides: Partial<NewJob> = {}): NewJob {
  return {
    id: newId("run"),
    orgId,
    kind: "notebook",
    notebookId: null,
    spec: {},
    priority: 0,
    maxAttempts: 3,
    backoffMinMs: 0,
    backoffMaxMs: 0,
    timeoutMs: 3_600_000,
    runAt: 1_000,
    createdAt: 1_000,
    userId: "user_a",
    ...overrides,
  };
}
