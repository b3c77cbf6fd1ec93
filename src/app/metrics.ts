import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { TerminationTracker } from "../domain/reconcile.ts";
import type { Store } from "../store/store.ts";

/** Prometheus metrics of one server process; job and instance gauges are read from the store at scrape. */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<"method" | "route" | "status">;
  readonly httpDuration: Histogram<"method" | "route">;
  readonly queueWait: Histogram;
  readonly runDuration: Histogram<"status">;
  readonly failures: Counter<"code">;
  /** What raced instances that lost cost before they were ended. */
  readonly raceWaste: Counter;

  constructor(store: Store, terminations: TerminationTracker) {
    const registers = [this.registry];
    this.httpRequests = new Counter({
      name: "hangar_http_requests_total",
      help: "HTTP requests by route and status",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.httpDuration = new Histogram({
      name: "hangar_http_request_duration_seconds",
      help: "HTTP request latency by route",
      labelNames: ["method", "route"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.queueWait = new Histogram({
      name: "hangar_queue_wait_seconds",
      help: "Time from a job becoming runnable to an instance claiming it",
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900],
      registers,
    });
    this.runDuration = new Histogram({
      name: "hangar_run_duration_seconds",
      help: "Duration of run attempts by outcome",
      labelNames: ["status"],
      buckets: [0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400],
      registers,
    });
    this.raceWaste = new Counter({
      name: "hangar_race_waste_usd_total",
      help: "USD billed for instances that lost a provisioning race, until they were ended",
      registers,
    });
    this.failures = new Counter({
      name: "hangar_run_failures_total",
      help: "Failed run attempts by error code",
      labelNames: ["code"],
      registers,
    });
    new Gauge({
      name: "hangar_jobs",
      help: "Jobs by state",
      labelNames: ["state"],
      registers,
      async collect() {
        for (const [state, n] of Object.entries(await store.countJobsByStatus())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: "hangar_instances_refusing_termination",
      help: "Stray instances whose termination the provider has not confirmed after repeated requests",
      registers,
      collect() {
        this.set(terminations.alerts().length);
      },
    });
    new Gauge({
      name: "hangar_instances",
      help: "Compute instances by state",
      labelNames: ["state"],
      registers,
      async collect() {
        for (const [state, n] of Object.entries(await store.countInstancesByState())) this.set({ state }, n);
      },
    });
  }
}
