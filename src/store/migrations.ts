import { type Kysely, type Migration, type MigrationProvider, sql } from "kysely";

/**
 * Migrations are written once with Kysely's schema builder and run unchanged on every dialect.
 * Timestamps are `bigint` milliseconds; booleans are integers; JSON is text.
 */
const migrations: Record<string, Migration> = {
  "0001_core": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("orgs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("api_keys")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("prefix", "text", (c) => c.notNull())
        .addColumn("key_hash", "text", (c) => c.notNull().unique())
        .addColumn("scopes", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("revoked_at", "bigint")
        .execute();
      await db.schema
        .createTable("notebooks")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("size", "bigint", (c) => c.notNull())
        .addColumn("cell_count", "integer", (c) => c.notNull())
        .addColumn("blob_key", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("notebooks_org").on("notebooks").columns(["org_id", "id"]).execute();
      await db.schema
        .createTable("datasets")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("total_size", "bigint", (c) => c.notNull())
        .addColumn("files", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("datasets_org").on("datasets").columns(["org_id", "id"]).execute();
      await db.schema
        .createTable("jobs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("notebook_id", "text")
        .addColumn("spec", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("priority", "integer", (c) => c.notNull())
        .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("max_attempts", "integer", (c) => c.notNull())
        .addColumn("backoff_min_ms", "bigint", (c) => c.notNull())
        .addColumn("backoff_max_ms", "bigint", (c) => c.notNull())
        .addColumn("timeout_ms", "bigint", (c) => c.notNull())
        .addColumn("run_at", "bigint", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("started_at", "bigint")
        .addColumn("finished_at", "bigint")
        .addColumn("lease_owner", "text")
        .addColumn("lease_token", "text")
        .addColumn("lease_expires_at", "bigint")
        .addColumn("cancel_requested", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("progress", "text")
        .addColumn("error", "text")
        .addColumn("compute", "text")
        .execute();
      // The claim scans queued jobs by priority then age; a partial index keeps it small as history grows.
      await db.schema
        .createIndex("jobs_claim")
        .on("jobs")
        .columns(["priority desc", "id"])
        .where(sql.ref("status"), "=", "queued")
        .execute();
      await db.schema
        .createIndex("jobs_running_lease")
        .on("jobs")
        .column("lease_expires_at")
        .where(sql.ref("status"), "=", "running")
        .execute();
      await db.schema.createIndex("jobs_org").on("jobs").columns(["org_id", "notebook_id", "id"]).execute();
      await db.schema
        .createTable("job_logs")
        .addColumn("job_id", "text", (c) => c.notNull())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("attempt", "integer", (c) => c.notNull())
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("ts", "bigint", (c) => c.notNull())
        .addColumn("stream", "text", (c) => c.notNull())
        .addColumn("text", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("job_logs_pk", ["job_id", "attempt", "seq"])
        .execute();
      await db.schema
        .createTable("instances")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("provider", "text", (c) => c.notNull())
        .addColumn("provider_instance_id", "text")
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("gpus", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("ready_at", "bigint")
        .addColumn("state_changed_at", "bigint", (c) => c.notNull())
        .addColumn("last_seen_at", "bigint")
        .addColumn("terminated_at", "bigint")
        .addColumn("termination_reason", "text")
        .addColumn("bootstrap_token_hash", "text")
        .addColumn("agent_token_hash", "text", (c) => c.unique())
        .execute();
      await db.schema.createIndex("instances_state").on("instances").columns(["provider", "state"]).execute();
      await db.schema
        .createTable("cluster_loops")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("last_run_at", "bigint", (c) => c.notNull())
        .execute();
    },
  },
  "0002_batches": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("jobs").addColumn("batch_id", "text").execute();
      await db.schema.alterTable("jobs").addColumn("result", "text").execute();
      // Children are claimed batch by batch in id order; the generic claim skips them.
      await db.schema
        .createIndex("jobs_batch_claim")
        .on("jobs")
        .columns(["batch_id", "id"])
        .where(sql.ref("status"), "=", "queued")
        .execute();
      await db.schema.createIndex("jobs_batch").on("jobs").columns(["batch_id", "status", "id"]).execute();
      await db.schema
        .createTable("batches")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("model", "text", (c) => c.notNull())
        .addColumn("model_version", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("priority", "integer", (c) => c.notNull())
        .addColumn("max_concurrent", "integer", (c) => c.notNull())
        .addColumn("total", "integer", (c) => c.notNull())
        .addColumn("pending", "integer", (c) => c.notNull())
        .addColumn("running", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("completed", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("failed", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("cancelled", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("score_name", "text", (c) => c.notNull())
        .addColumn("score_unit", "text", (c) => c.notNull())
        .addColumn("score_better", "text", (c) => c.notNull())
        .addColumn("best_score", "double precision")
        .addColumn("best_job_id", "text")
        .addColumn("score_count", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("score_sum", "double precision", (c) => c.notNull().defaultTo(0))
        .addColumn("score_square_sum", "double precision", (c) => c.notNull().defaultTo(0))
        .addColumn("spec", "text", (c) => c.notNull())
        .addColumn("cancel_requested", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("started_at", "bigint")
        .addColumn("finished_at", "bigint")
        .addColumn("artifacts_at", "bigint")
        .execute();
      await db.schema.createIndex("batches_org").on("batches").columns(["org_id", "id"]).execute();
      // Claimers look for batches with children left, best priority first.
      await db.schema
        .createIndex("batches_claim")
        .on("batches")
        .columns(["priority desc", "id"])
        .where(sql.ref("pending"), ">", 0)
        .execute();
    },
  },
  "0003_batch_validation": {
    async up(db: Kysely<unknown>) {
      // Big batches are checked after they are accepted; this lease makes one server do it.
      await db.schema.alterTable("batches").addColumn("validation_until", "bigint").execute();
    },
  },
  "0004_launch_history": {
    async up(db: Kysely<unknown>) {
      // Each instance is one launch attempt: the host it landed on and the price the provider reported.
      await db.schema.alterTable("instances").addColumn("machine_id", "text").execute();
      await db.schema.alterTable("instances").addColumn("price_per_hour", "double precision").execute();
      await db.schema
        .createIndex("instances_org_created")
        .on("instances")
        .columns(["org_id", "created_at"])
        .execute();
    },
  },
  "0005_job_gpu": {
    async up(db: Kysely<unknown>) {
      // A job that asks for GPUs is claimed only by an instance that has them (or by this host when no
      // cloud can launch GPUs); provisioning counts the demand per GPU type from these columns.
      await db.schema.alterTable("jobs").addColumn("gpu_type", "text").execute();
      await db.schema
        .alterTable("jobs")
        .addColumn("gpu_count", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex("jobs_gpu_queued").on("jobs").columns(["status", "gpu_type"]).execute();
    },
  },
  "0006_market_snapshots": {
    async up(db: Kysely<unknown>) {
      // The market view's history: per GPU type and kind, the price spread at each snapshot.
      await db.schema
        .createTable("market_snapshots")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("taken_at", "bigint", (c) => c.notNull())
        .addColumn("gpu", "text", (c) => c.notNull())
        .addColumn("spot", "integer", (c) => c.notNull())
        .addColumn("offers", "integer", (c) => c.notNull())
        .addColumn("min_price", "double precision", (c) => c.notNull())
        .addColumn("median_price", "double precision", (c) => c.notNull())
        .addColumn("p90_price", "double precision", (c) => c.notNull())
        .addPrimaryKeyConstraint("market_snapshots_pk", ["org_id", "taken_at", "gpu", "spot"])
        .execute();
    },
  },
  "0007_job_strategy": {
    async up(db: Kysely<unknown>) {
      // How a GPU run's instance is launched, when the run chose (null: the deployment's default).
      await db.schema.alterTable("jobs").addColumn("strategy", "text").execute();
    },
  },
  "0008_provider_credentials": {
    async up(db: Kysely<unknown>) {
      // An org's cloud credentials, sealed (AES-256-GCM): never stored, logged or returned in clear.
      await db.schema
        .createTable("provider_credentials")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("provider", "text", (c) => c.notNull())
        .addColumn("ciphertext", "text", (c) => c.notNull())
        .addColumn("iv", "text", (c) => c.notNull())
        .addColumn("tag", "text", (c) => c.notNull())
        .addColumn("key_hint", "text", (c) => c.notNull())
        .addColumn("updated_at", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("provider_credentials_pk", ["org_id", "provider"])
        .execute();
    },
  },
  "0009_tenancy": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("users")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("email", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("password_hash", "text")
        .addColumn("platform_admin", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("memberships")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("user_id", "text", (c) => c.notNull().references("users.id"))
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("memberships_pk", ["org_id", "user_id"])
        .execute();
      await db.schema.createIndex("memberships_user").on("memberships").column("user_id").execute();
      // Keys act for one user in one org; keys made before users existed act for the bootstrap admin.
      await db.schema.alterTable("api_keys").addColumn("user_id", "text").execute();
      await db.schema.alterTable("api_keys").addColumn("expires_at", "bigint").execute();
      await db.schema
        .createTable("refresh_tokens")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("user_id", "text", (c) => c.notNull().references("users.id"))
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("expires_at", "bigint", (c) => c.notNull())
        .addColumn("revoked_at", "bigint")
        .execute();
      await db.schema
        .createTable("invitations")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("email", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("expires_at", "bigint", (c) => c.notNull())
        .addColumn("accepted_at", "bigint")
        .execute();
      // Per-org scheduling policy: a default priority and limits on what runs at once (null: none).
      await db.schema
        .alterTable("orgs")
        .addColumn("default_priority", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable("orgs").addColumn("max_running_jobs", "integer").execute();
      await db.schema.alterTable("orgs").addColumn("max_gpus", "integer").execute();
      await db.schema.alterTable("orgs").addColumn("max_instances", "integer").execute();
      await db.schema.alterTable("jobs").addColumn("user_id", "text").execute();
      await db.schema.alterTable("batches").addColumn("user_id", "text").execute();
      // Fair share and concurrency limits count each org's running jobs.
      await db.schema.createIndex("jobs_org_status").on("jobs").columns(["org_id", "status"]).execute();
      await db.schema
        .createTable("ledger_entries")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("entry_key", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("from_account", "text", (c) => c.notNull())
        .addColumn("to_account", "text", (c) => c.notNull())
        .addColumn("amount_micro", "bigint", (c) => c.notNull())
        .addColumn("subject", "text")
        .addColumn("user_id", "text")
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("note", "text")
        .addPrimaryKeyConstraint("ledger_entries_pk", ["org_id", "entry_key"])
        .execute();
      await db.schema
        .createIndex("ledger_subject")
        .on("ledger_entries")
        .columns(["org_id", "subject"])
        .execute();
      await db.schema
        .createIndex("ledger_created")
        .on("ledger_entries")
        .columns(["org_id", "created_at"])
        .execute();
      // One row per attempt on an instance: what it used, at what price and share; usage reports read it.
      await db.schema
        .createTable("usage_records")
        .addColumn("job_id", "text", (c) => c.notNull())
        .addColumn("attempt", "integer", (c) => c.notNull())
        .addColumn("started_at", "bigint", (c) => c.notNull())
        .addColumn("ended_at", "bigint", (c) => c.notNull())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("user_id", "text")
        .addColumn("batch_id", "text")
        .addColumn("model", "text", (c) => c.notNull())
        .addColumn("provider", "text", (c) => c.notNull())
        .addColumn("instance_id", "text", (c) => c.notNull())
        .addColumn("gpu_type", "text")
        .addColumn("gpu_count", "integer", (c) => c.notNull())
        .addColumn("price_micro_per_hour", "bigint", (c) => c.notNull())
        .addColumn("share", "integer", (c) => c.notNull())
        .addColumn("cost_micro", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("usage_records_pk", ["job_id", "attempt", "started_at"])
        .execute();
      await db.schema
        .createIndex("usage_org_ended")
        .on("usage_records")
        .columns(["org_id", "ended_at"])
        .execute();
      await db.schema.createIndex("usage_instance").on("usage_records").column("instance_id").execute();
      await db.schema.alterTable("instances").addColumn("billed_at", "bigint").execute();
      await db.schema
        .createTable("budgets")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        // "" for the whole org, else a user id: a primary key cannot hold null.
        .addColumn("user_scope", "text", (c) => c.notNull())
        .addColumn("monthly_limit_micro", "bigint", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("webhook_url", "text")
        .addColumn("updated_at", "bigint", (c) => c.notNull())
        .addPrimaryKeyConstraint("budgets_pk", ["org_id", "user_scope"])
        .execute();
      await db.schema
        .createTable("budget_events")
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("user_scope", "text", (c) => c.notNull())
        .addColumn("month", "text", (c) => c.notNull())
        .addColumn("threshold", "integer", (c) => c.notNull())
        .addColumn("spent_micro", "bigint", (c) => c.notNull())
        .addColumn("limit_micro", "bigint", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("delivered_at", "bigint")
        .addPrimaryKeyConstraint("budget_events_pk", ["org_id", "user_scope", "month", "threshold"])
        .execute();
    },
  },
  "0010_single_claim_index": {
    // The claim of jobs outside batches (`status = ? AND batch_id IS NULL ORDER BY priority DESC, id`)
    // walked jobs_batch and sorted every queued job on each claim: Kysely binds 'queued' as a
    // parameter, which SQLite cannot match to jobs_claim's partial WHERE. With both equalities leading
    // and the order after them, the first rows of the index are the claim's candidates.
    async up(db: Kysely<unknown>) {
      await db.schema
        .createIndex("jobs_single_claim")
        .on("jobs")
        .columns(["status", "batch_id", "priority desc", "id"])
        .execute();
    },
  },
  "0011_drop_gpu_queued_index": {
    // The provisioning loop's count of runnable jobs outside batches (`status = ? AND batch_id IS NULL
    // … GROUP BY gpu_type, …`) walked jobs_gpu_queued, every queued batch child included: 20-60 ms
    // a pass with 100,000 of them, blocking SQLite's event loop. Without it the count walks the
    // (batch_id, status) prefix of jobs_batch; claims walk jobs_single_claim and never needed it.
    async up(db: Kysely<unknown>) {
      await db.schema.dropIndex("jobs_gpu_queued").execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
