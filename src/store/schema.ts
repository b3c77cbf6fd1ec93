import type { Generated } from "kysely";

/** Timestamps are integer epoch milliseconds and JSON is text, so both dialects store the same values. */
export interface Database {
  orgs: { id: string; name: string; created_at: number };
  api_keys: {
    id: string;
    org_id: string;
    name: string;
    prefix: string;
    key_hash: string;
    scopes: string;
    created_at: number;
    revoked_at: number | null;
  };
  notebooks: {
    id: string;
    org_id: string;
    name: string;
    size: number;
    cell_count: number;
    blob_key: string;
    created_at: number;
  };
  datasets: {
    id: string;
    org_id: string;
    name: string;
    total_size: number;
    files: string;
    created_at: number;
  };
  jobs: {
    id: string;
    org_id: string;
    kind: string;
    notebook_id: string | null;
    spec: string;
    status: string;
    priority: number;
    attempts: Generated<number>;
    max_attempts: number;
    backoff_min_ms: number;
    backoff_max_ms: number;
    timeout_ms: number;
    run_at: number;
    created_at: number;
    started_at: number | null;
    finished_at: number | null;
    lease_owner: string | null;
    lease_token: string | null;
    lease_expires_at: number | null;
    cancel_requested: Generated<number>;
    progress: string | null;
    error: string | null;
    compute: string | null;
    batch_id: string | null;
    result: string | null;
    /** The GPU type a job asks for (Hangar's name), null for none; claims match it to instances. */
    gpu_type: string | null;
    gpu_count: Generated<number>;
    strategy: string | null;
  };
  provider_credentials: {
    org_id: string;
    provider: string;
    ciphertext: string;
    iv: string;
    tag: string;
    key_hint: string;
    updated_at: number;
  };
  market_snapshots: {
    org_id: string;
    taken_at: number;
    gpu: string;
    spot: number;
    offers: number;
    min_price: number;
    median_price: number;
    p90_price: number;
  };
  batches: {
    id: string;
    org_id: string;
    name: string;
    model: string;
    model_version: string;
    status: string;
    priority: number;
    max_concurrent: number;
    total: number;
    pending: number;
    running: Generated<number>;
    completed: Generated<number>;
    failed: Generated<number>;
    cancelled: Generated<number>;
    score_name: string;
    score_unit: string;
    score_better: string;
    best_score: number | null;
    best_job_id: string | null;
    score_count: Generated<number>;
    score_sum: Generated<number>;
    score_square_sum: Generated<number>;
    spec: string;
    cancel_requested: Generated<number>;
    created_at: number;
    started_at: number | null;
    finished_at: number | null;
    artifacts_at: number | null;
    validation_until: number | null;
  };
  job_logs: {
    job_id: string;
    org_id: string;
    attempt: number;
    seq: number;
    ts: number;
    stream: string;
    text: string;
  };
  instances: {
    id: string;
    org_id: string;
    provider: string;
    provider_instance_id: string | null;
    state: string;
    gpus: string;
    created_at: number;
    ready_at: number | null;
    state_changed_at: number;
    last_seen_at: number | null;
    terminated_at: number | null;
    termination_reason: string | null;
    machine_id: string | null;
    price_per_hour: number | null;
    bootstrap_token_hash: string | null;
    agent_token_hash: string | null;
  };
  cluster_loops: { name: string; last_run_at: number };
}
