import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Kysely, sql } from "kysely";
import { createNodeSqliteDialect } from "../../src/store/sqlite/sqlite-dialect.ts";

interface Rows {
  parents: { id: number };
  children: { id: number; parent_id: number };
}

/** A database in a temp file (the reader connection and the checkpointer exist only for files). */
async function openDb(t: { after: (fn: () => Promise<void>) => void }): Promise<Kysely<Rows>> {
  const dir = await mkdtemp(join(tmpdir(), "hangar-sqlite-dialect-"));
  const db = new Kysely<Rows>({ dialect: createNodeSqliteDialect(join(dir, "test.sqlite")) });
  t.after(async () => {
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  await sql`create table parents (id integer primary key)`.execute(db);
  await sql`create table children (id integer primary key, parent_id integer references parents(id) deferrable initially deferred)`.execute(
    db,
  );
  return db;
}

describe("the node:sqlite driver", () => {
  it("reads the last commit while another request's write transaction is open", async (t) => {
    const db = await openDb(t);
    await db.insertInto("parents").values({ id: 1 }).execute();
    let readInside: number[] = [];
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("parents").values({ id: 2 }).execute();
      // A plain read outside the transaction neither waits for it nor sees its uncommitted row.
      readInside = (await db.selectFrom("parents").select("id").orderBy("id").execute()).map((r) => r.id);
    });
    assert.deepEqual(readInside, [1]);
    const after = (await db.selectFrom("parents").select("id").orderBy("id").execute()).map((r) => r.id);
    assert.deepEqual(after, [1, 2]);
  });

  it("lets other requests in while a long transaction runs", async (t) => {
    const db = await openDb(t);
    let turnsTaken = 0;
    const ticker = setInterval(() => turnsTaken++, 0);
    try {
      await db.transaction().execute(async (trx) => {
        const started = performance.now();
        for (let id = 1; performance.now() - started < 50; id++) {
          await trx.insertInto("parents").values({ id }).execute();
        }
      });
    } finally {
      clearInterval(ticker);
    }
    assert.ok(turnsTaken >= 5, `timers ran ${turnsTaken} times during a 50 ms transaction`);
  });

  it("rolls back a transaction whose commit fails, so the next one starts clean", async (t) => {
    const db = await openDb(t);
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await trx.insertInto("parents").values({ id: 1 }).execute();
        // A deferred foreign key is checked at commit: this commit fails.
        await trx.insertInto("children").values({ id: 1, parent_id: 99 }).execute();
      }),
      /FOREIGN KEY/,
    );
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("parents").values({ id: 5 }).execute();
    });
    const parents = (await db.selectFrom("parents").select("id").execute()).map((r) => r.id);
    assert.deepEqual(parents, [5], "the failed transaction's row is gone and the next one committed");
  });
});
