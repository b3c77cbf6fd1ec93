import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Kysely, PostgresIntrospector, sql } from "kysely";
import pg from "pg";
import { createPostgresDialect } from "../../src/store/postgres/postgres-dialect.ts";
import { TEST_DATABASE_URL } from "../helpers/stores.ts";

/** A fresh schema with one table of every column kind the introspector tells apart, and a Kysely on it. */
async function openDb(t: { after: (fn: () => Promise<void>) => void }) {
  const schema = `t_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
  await admin.query(`create schema ${schema}`);
  const db = new Kysely<unknown>({
    dialect: createPostgresDialect({ connectionString: TEST_DATABASE_URL, schema }),
  });
  t.after(async () => {
    await db.destroy();
    await admin.query(`drop schema ${schema} cascade; drop schema if exists ${schema}_other cascade`);
    await admin.end();
  });
  await sql`create table runs (id bigserial primary key, seq int generated always as identity, name text not null default 'x', note varchar(20))`.execute(
    db,
  );
  await sql`comment on column runs.note is 'why'`.execute(db);
  await sql`create view named_runs as select id, name from runs`.execute(db);
  return { db, schema, admin };
}

describe("the PostgreSQL dialect", () => {
  it("describes its own schema's tables exactly as Kysely's introspector does, and no other schema's", async (t) => {
    const { db, schema, admin } = await openDb(t);
    await admin.query(`create schema ${schema}_other; create table ${schema}_other.elsewhere (x int)`);
    const ours = await db.introspection.getTables();
    const kysely = (await new PostgresIntrospector(db).getTables()).filter(
      (table) => table.schema === schema,
    );
    // Kysely writes an absent comment as `comment: undefined`; a JSON round trip compares the facts.
    assert.deepEqual(JSON.parse(JSON.stringify(ours)), JSON.parse(JSON.stringify(kysely)));
    assert.deepEqual(
      ours.map((table) => [table.name, table.isView]),
      [
        ["named_runs", true],
        ["runs", false],
      ],
    );
  });

  it("introspects while other schemas are created and dropped, which fails Kysely's own introspector", async (t) => {
    const { db, schema, admin } = await openDb(t);
    let stop = false;
    const churn = async (lane: number) => {
      for (let i = 0; !stop; i++) {
        const other = `${schema}_churn_${lane}_${i}`;
        await admin.query(`create schema ${other}; create table ${other}.a (x int, y text)`);
        await admin.query(`drop schema ${other} cascade`);
      }
    };
    const failures = { ours: 0, kysely: 0 };
    let calls = 0;
    const introspect = async (which: keyof typeof failures, read: () => Promise<unknown>) => {
      while (!stop) {
        calls++;
        await read().catch(() => failures[which]++);
      }
    };
    const lanes = [
      churn(1),
      churn(2),
      churn(3),
      introspect("ours", () => db.introspection.getTables()),
      introspect("kysely", () => new PostgresIntrospector(db).getTables()),
    ];
    // Stop once Kysely's introspector has failed a few times (it shows the race is real), or after 20 s.
    const deadline = Date.now() + 20_000;
    while (failures.kysely < 3 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    stop = true;
    await Promise.all(lanes);
    assert.ok(failures.kysely >= 3, `the race never happened in ${calls} calls`);
    assert.equal(failures.ours, 0);
  });
});
