/**
 * The benchmark harness behind `./hangar bench` and `npm run bench`: runs every benchmark script of
 * this folder one after another (each prints one JSON object), then writes their figures with the
 * machine and the versions compared to `<out>/report.json` and a Markdown report, `<out>/report.md`.
 *
 *   node bench/run.ts [--quick] [--only scheduler,api,…] [--out docs/benchmarks]
 *
 * `--quick` runs every suite small (under 3 minutes on 2 cores) and writes `quick-report.*` so that
 * it never replaces the published full report. `--only` reruns some suites and keeps the others'
 * figures from the report already there. A suite that fails is reported as failed with its error;
 * the others still run.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { machine, progress, round, secondsSince } from "./lib.ts";

const REPO = join(import.meta.dirname, "..");
const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    out: { type: "string", default: join(REPO, "docs", "benchmarks") },
  },
});

type Json = { [key: string]: unknown };

/** The value at a dotted path of a suite's JSON, or undefined. */
function at(value: unknown, path: string): unknown {
  let current = value;
  for (const key of path.split(".")) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Json)[key];
  }
  return current;
}

/** A figure for a table cell: numbers with thousands separators, "—" where there is none. */
function cell(value: unknown, unit = ""): string {
  if (typeof value === "number")
    return `${value.toLocaleString("en-US", { maximumFractionDigits: 2 })}${unit}`;
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string") return value;
  return "—";
}

/** "median (min–max)" of a lib.ts Spread. */
function spreadCell(value: unknown, unit = ""): string {
  const median = at(value, "median");
  if (typeof median !== "number") return cell(value, unit);
  const [min, max] = [at(value, "min"), at(value, "max")];
  return min === max ? cell(median, unit) : `${cell(median, unit)} (${cell(min)}–${cell(max)})`;
}

const table = (header: string[], rows: string[][]): string[] => [
  `| ${header.join(" | ")} |`,
  `| ${header.map(() => "---").join(" | ")} |`,
  ...rows.map((row) => `| ${row.join(" | ")} |`),
];

interface Suite {
  name: string;
  title: string;
  script: string;
  full: string[];
  quick: string[];
  /** What it measures and against what, for the report. */
  about: string;
  render(result: Json): string[];
}

const SUITES: Suite[] = [
  {
    name: "scheduler",
    title: "Queue: Hangar's scheduler against pg-boss, Graphile Worker and BullMQ",
    script: "scheduler.ts",
    full: ["--jobs", "5000", "--reps", "3", "--latency-seconds", "3"],
    quick: ["--jobs", "300", "--reps", "1", "--latency-seconds", "1"],
    about:
      "Trivial jobs, 4 workers: claim→complete throughput with a queue filled beforehand (batch 1 and batch 50 per claim), and submit→claim latency at a fixed rate. Hangar runs its real claim (fair share on, two orgs, org limits checked) on SQLite and PostgreSQL; the peers run their own workers on the same PostgreSQL and Redis.",
    render(result) {
      const rows: string[][] = [];
      const batches = Object.keys((at(result, "sqlite.throughput") as Json | undefined) ?? {});
      const line = (name: string, section: unknown, rate: unknown) => [
        name,
        ...batches.map((b) => spreadCell(at(section, `throughput.${b}.jobs_per_s`), "/s")),
        `${spreadCell(at(section, "latency.submit_to_claim_ms.p50"), " ms")} / ${spreadCell(at(section, "latency.submit_to_claim_ms.p99"), " ms")}`,
        cell(rate, "/s"),
      ];
      rows.push(line("Hangar, SQLite", result.sqlite, at(result, "sqlite.latency.target_rate_per_s")));
      rows.push(
        line("Hangar, PostgreSQL", result.postgres, at(result, "postgres.latency.target_rate_per_s")),
      );
      for (const [name, peer] of Object.entries((result.peers as Json | undefined) ?? {})) {
        const skipped = at(peer, "skipped");
        if (typeof skipped === "string")
          rows.push([name, `skipped: ${skipped}`, ...batches.map(() => ""), ""]);
        else rows.push(line(`${name} ${cell(at(peer, "version"))}`, peer, at(peer, "latency.rate_per_s")));
      }
      const ratioRows = Object.entries((result.ratios as Json | undefined) ?? {}).map(([name, r]) => [
        name,
        ...batches.map(
          (b) =>
            `${cell(at(r, `hangar_postgres_over_peer_${b}`), "×")} / ${cell(at(r, `hangar_sqlite_over_peer_${b}`), "×")}`,
        ),
      ]);
      return [
        ...table(
          ["", ...batches.map((b) => `${b.replace("_", " ")}: jobs/s`), "submit→claim p50 / p99", "at"],
          rows,
        ),
        "",
        "Throughput ratio, Hangar PostgreSQL / Hangar SQLite over each peer (above 1×: Hangar is faster):",
        "",
        ...table(["peer", ...batches.map((b) => b.replace("_", " "))], ratioRows),
      ];
    },
  },
  {
    name: "api",
    title: "API under load",
    script: "api.ts",
    full: ["--seconds", "10", "--reps", "3"],
    quick: ["--seconds", "1", "--reps", "1"],
    about:
      "autocannon on loopback, 16 connections, against a real `./hangar server` (API key auth, rate limits off): `GET /api/v1/runs/{id}` and a notebook run's submit. Reference: a bare Fastify process answering the same JSON from memory.",
    render(result) {
      const rows: string[][] = [];
      for (const dialect of ["sqlite", "postgres"]) {
        const section = result[dialect];
        if (typeof at(section, "skipped") === "string") continue;
        const label = dialect === "sqlite" ? "SQLite" : "PostgreSQL";
        const row = (what: string, key: string, ratio: string | null) => [
          `${label}: ${what}`,
          spreadCell(at(section, `${key}.requests_per_s`)),
          spreadCell(at(section, `${key}.latency_p50_ms`), " ms"),
          spreadCell(at(section, `${key}.latency_p99_ms`), " ms"),
          ratio === null ? "" : cell(at(section, `ratios.${ratio}`), "×"),
        ];
        rows.push(row("bare Fastify GET (reference)", "reference_get", null));
        rows.push(row("`GET /runs/{id}`", "get_run", "get_run_over_bare_fastify"));
        rows.push(row("bare Fastify POST (reference)", "reference_post", null));
        rows.push(row("submit `POST /notebooks/{id}/runs`", "submit", "submit_over_bare_fastify"));
      }
      return table(["", "requests/s", "p50", "p99", "÷ reference"], rows);
    },
  },
  {
    name: "screen",
    title: "Batches and Vina",
    script: "screen.ts",
    full: ["--ligands", "100000", "--vina-ligands", "20"],
    quick: ["--ligands", "5000", "--skip-vina", "--skip-postgres"],
    about:
      "A generated library of distinct SMILES submitted as one batch to a real server: time to the answer and to `queued`, peak RSS, `GET /batches/{id}` latency while the server's agents end children (a stand-in model: saturated, paced at units of 64 per 0.25 s, and fleet-paced at units of 64 per 2 s), at the client and as the server's request-duration histogram counted it (the share answered within 5 ms). Vina: 20 ligands through Hangar against `vina` run directly on the same prepared inputs. Packing: Boltz-2's published costs, packed against one instance per ligand.",
    render(result) {
      const lines: string[] = [];
      const rows: string[][] = [];
      for (const key of ["submit_sqlite", "submit_postgres"]) {
        const s = result[key];
        if (s === undefined) continue;
        rows.push([
          key === "submit_sqlite" ? "SQLite" : "PostgreSQL",
          cell(at(s, "ligands")),
          cell(at(s, "accepted_s"), " s"),
          cell(at(s, "checked_and_queued_s"), " s"),
          cell(at(s, "server_peak_rss_mib"), " MiB"),
          ...["saturated", "paced", "fleet"].map((phase) => {
            const read = (field: string) => at(s, `get_batch_while_completing_ms.${phase}.${field}`);
            const share = read("server.within_5ms_share");
            const gpus = read("boltz2_gpus_at_this_pace");
            const pace = typeof gpus === "number" ? ` (${cell(gpus)} Boltz-2 GPUs)` : "";
            const server = typeof share === "number" ? `; server ≤ 5 ms: ${(share * 100).toFixed(1)}%` : "";
            const floor = read("healthz_reference.p99");
            const healthz = typeof floor === "number" ? `; \`/healthz\` p99 ${cell(floor)} ms` : "";
            return `${cell(read("p50"))} / ${cell(read("p99"))} ms at ${cell(read("children_ended_per_s"))}/s${pace}${server}${healthz}`;
          }),
        ]);
      }
      lines.push(
        ...table(
          [
            "",
            "ligands",
            "answered",
            "checked, queued",
            "peak RSS",
            "GET batch p50 / p99, saturated",
            "GET batch p50 / p99, paced",
            "GET batch p50 / p99, fleet-paced",
          ],
          rows,
        ),
      );
      if (result.vina !== undefined) {
        lines.push(
          "",
          ...table(
            ["Vina", "ligands/h", "ratio"],
            [
              [
                "through Hangar",
                cell(at(result, "vina.hangar.ligands_per_hour")),
                cell(at(result, "vina.ratio_hangar_over_direct"), "×"),
              ],
              ["`vina` directly, same inputs", cell(at(result, "vina.direct.ligands_per_hour")), ""],
            ],
          ),
        );
      }
      lines.push(
        "",
        ...table(
          ["Boltz-2 costs, packing", "instances", "billed instance-s", "per prediction"],
          [
            [
              "packed",
              cell(at(result, "packing.packed.instances")),
              cell(at(result, "packing.packed.billed_instance_s")),
              cell(at(result, "packing.packed.per_prediction_s"), " s"),
            ],
            [
              "one instance per ligand",
              cell(at(result, "packing.one_instance_per_ligand.instances")),
              cell(at(result, "packing.one_instance_per_ligand.billed_instance_s")),
              `${cell(at(result, "packing.one_instance_per_ligand.per_prediction_s"), " s")} (${cell(at(result, "packing.saving_ratio"), "×")})`,
            ],
          ],
        ),
      );
      return lines;
    },
  },
  {
    name: "notebook",
    title: "Notebook overhead against nbclient",
    script: "notebook.ts",
    full: ["--reps", "5"],
    quick: ["--reps", "1"],
    about:
      "A three-cell notebook submitted through the real server (SQLite, local provider) until it succeeds, against the same notebook run with nbclient directly, alternating.",
    render: (result) =>
      table(
        ["", "wall time", "÷ nbclient"],
        [
          ["nbclient directly", spreadCell(at(result, "nbclient.wall_ms"), " ms"), ""],
          [
            "Hangar, warm instance",
            spreadCell(at(result, "hangar.warm.wall_ms"), " ms"),
            cell(at(result, "ratios.hangar_warm_over_nbclient"), "×"),
          ],
          [
            "Hangar, cold (launches the instance)",
            cell(at(result, "hangar.cold.wall_ms"), " ms"),
            cell(at(result, "ratios.hangar_cold_over_nbclient"), "×"),
          ],
        ],
      ),
  },
  {
    name: "provisioning",
    title: "Provisioning strategies on the simulated market",
    script: "provisioning.ts",
    full: ["--ready-runs", "10", "--launches", "1000"],
    quick: ["--ready-runs", "1", "--launches", "100", "--restarts", "1"],
    about:
      "GPU runs through the real provisioner on the `sim` market (log-normal boots, failed and stuck launches), clock ×20: time to start per strategy; then launches with 20% faulty provider calls and control-plane restarts, counting leaked instances.",
    render(result) {
      const strategies = Object.entries((result.time_to_start as Json | undefined) ?? {});
      return [
        ...table(
          ["strategy", "runs", "p50", "p90", "instances launched", "race waste"],
          strategies.map(([name, s]) => [
            name,
            cell(at(s, "runs")),
            cell(at(s, "p50_s"), " s"),
            cell(at(s, "p90_s"), " s"),
            cell(at(s, "instances_launched")),
            typeof at(s, "race_waste_usd") === "number" ? `$${cell(at(s, "race_waste_usd"))}` : "—",
          ]),
        ),
        "",
        ...table(
          ["launches", "faulty calls", "made by the market / recorded", "leaked"],
          [
            [
              cell(at(result, "leaks.launches")),
              cell(at(result, "leaks.launch_calls_failed")),
              `${cell(at(result, "leaks.instances_at_provider_before_cleanup"))} / ${cell(at(result, "leaks.instances_recorded_as_launched"))}`,
              cell(at(result, "leaks.leaked_instances")),
            ],
          ],
        ),
      ];
    },
  },
  {
    name: "fairshare",
    title: "Fair share between orgs",
    script: "fairshare.ts",
    full: ["--repeats", "3"],
    quick: ["--ligands", "300", "--repeats", "1"],
    about:
      "One org's big Boltz-2 batch fills every agent (stand-in model); a second org then submits one prediction and a 64-ligand batch. Seconds the second org waits, with fair share off and on, alternating.",
    render(result) {
      const row = (what: string, key: string, ratio: string) => [
        what,
        spreadCell(at(result, `fair_share_off.${key}`), " s"),
        spreadCell(at(result, `fair_share_on.${key}`), " s"),
        cell(at(result, `ratios_off_over_on.${ratio}`), "×"),
      ];
      return table(
        ["", "fair share off", "fair share on", "off ÷ on"],
        [
          row("single prediction claimed", "single_wait_s", "single_wait"),
          row("64-ligand batch done", "small_batch_done_s", "small_batch_done"),
          row("first org's batch done", "big_batch_done_s", "big_batch_done"),
        ],
      );
    },
  },
];

/** Runs one suite's script; its JSON, or why there is none. */
async function runSuite(
  suite: Suite,
  extra: string[],
): Promise<{ result?: Json; error?: string; seconds: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [join(import.meta.dirname, suite.script), ...extra], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let stdout = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  const seconds = secondsSince(started);
  if (code !== 0) return { error: `exited with ${code}`, seconds };
  try {
    return { result: JSON.parse(stdout) as Json, seconds };
  } catch {
    return { error: `printed no JSON (${stdout.slice(0, 200)})`, seconds };
  }
}

const quietly = (command: string, commandArgs: string[]): string | null => {
  try {
    return execFileSync(command, commandArgs, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return null;
  }
};

/** The first line of Redis's INFO server section that names its version (a raw RESP command). */
async function redisVersion(url: string): Promise<string | null> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port || 6379), hostname);
    let reply = "";
    socket.setTimeout(2000, () => {
      socket.destroy();
      resolve(null);
    });
    socket.on("error", () => resolve(null));
    socket.on("connect", () => socket.write("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8");
      const version = /redis_version:([^\r\n]+)/.exec(reply)?.[1];
      if (version) {
        socket.destroy();
        resolve(version);
      }
    });
  });
}

async function postgresVersion(url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const { rows } = await client.query<{ server_version: string }>("show server_version");
    return rows[0]?.server_version ?? null;
  } catch {
    return null;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function versions() {
  const pkg = (await import(join(REPO, "package.json"), { with: { type: "json" } })) as {
    default: { version: string; dependencies: Record<string, string> };
  };
  const bench = (await import(join(import.meta.dirname, "package.json"), { with: { type: "json" } })) as {
    default: { dependencies: Record<string, string> };
  };
  return {
    hangar: `${pkg.default.version} (${quietly("git", ["-C", REPO, "rev-parse", "--short", "HEAD"]) ?? "no git"})`,
    node: process.version,
    postgresql: await postgresVersion(
      process.env.HANGAR_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test",
    ),
    redis: await redisVersion(process.env.HANGAR_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379"),
    sqlite: "node:sqlite (bundled with Node)",
    fastify: pkg.default.dependencies.fastify,
    kysely: pkg.default.dependencies.kysely,
    references: bench.default.dependencies,
    vina: quietly("vina", ["--version"])?.split("\n")[0] ?? null,
    // The interpreter notebooks run with (the server's HANGAR_PYTHON default), not the first on PATH.
    python_nbclient: quietly(process.env.HANGAR_PYTHON ?? "/usr/bin/python3", [
      "-c",
      "import nbclient, sys; print(sys.version.split()[0], nbclient.__version__)",
    ]),
  };
}

/** The suites of an earlier report at `path`, or none. */
async function readPrevious(path: string): Promise<Json> {
  try {
    return ((JSON.parse(await readFile(path, "utf8")) as Json).suites as Json | undefined) ?? {};
  } catch {
    return {};
  }
}

async function main() {
  const started = performance.now();
  const only = args.only?.split(",").map((s) => s.trim());
  const unknown = only?.filter((name) => !SUITES.some((s) => s.name === name)) ?? [];
  if (unknown.length > 0)
    throw new Error(`unknown suite ${unknown.join(", ")}: pick from ${SUITES.map((s) => s.name).join(", ")}`);
  const suites = SUITES.filter((s) => !only || only.includes(s.name));
  const host = machine();
  const report: Json = {
    generated_at: new Date().toISOString(),
    mode: args.quick ? "quick" : "full",
    machine: { ...host, os: quietly("uname", ["-sr"]) },
    versions: await versions(),
    suites: {},
  };
  const base = args.quick ? "quick-report" : "report";
  // A run of some suites keeps the other suites' last figures (each entry says when it was measured).
  const previous = only ? await readPrevious(join(args.out, `${base}.json`)) : {};
  const entries: Json = { ...previous };
  for (const suite of suites) {
    const extra = args.quick ? suite.quick : suite.full;
    progress(`== ${suite.name}: node bench/${suite.script} ${extra.join(" ")}`);
    const outcome = await runSuite(suite, extra);
    entries[suite.name] = {
      command: `node bench/${suite.script} ${extra.join(" ")}`,
      measured_at: new Date().toISOString(),
      seconds: outcome.seconds,
      ...(outcome.error ? { failed: outcome.error } : { result: outcome.result }),
    };
  }
  const md: string[] = [];
  for (const suite of SUITES) {
    const entry = entries[suite.name];
    if (entry === undefined) continue;
    report.suites = { ...(report.suites as Json), [suite.name]: entry };
    const failed = at(entry, "failed");
    md.push(
      `## ${suite.title}`,
      "",
      suite.about,
      "",
      `Rerun: \`${cell(at(entry, "command"))}\` (${cell(at(entry, "seconds"))} s; measured ${cell(at(entry, "measured_at")).slice(0, 16).replace("T", " ")} UTC).`,
      "",
    );
    if (typeof failed === "string") md.push(`**Failed:** ${failed}.`, "");
    else md.push(...suite.render(at(entry, "result") as Json), "");
  }
  report.seconds = secondsSince(started);
  const versionsSeen = report.versions as Json;
  const header = [
    `# Benchmark report (${report.mode})`,
    "",
    `Generated by \`${args.quick ? "./hangar bench --quick" : "./hangar bench"}\` on ${String(report.generated_at).slice(0, 16).replace("T", " ")} UTC in ${round(Number(report.seconds) / 60, 1)} min. Every figure was measured beside its reference in the same run of its suite, on one machine (each section says when); the machine is shared and noisy, so read the ratios and the medians (min–max of the repetitions), not single numbers. The JSON behind this page is \`${args.quick ? "quick-report.json" : "report.json"}\`.`,
    "",
    `**Machine:** ${host.cores} cores (${host.cpu_model}), ${host.memory_gb} GiB, ${cell((report.machine as Json).os)}; load average ${host.load_average.join(" / ")} at the start.`,
    "",
    `**Versions:** Hangar ${cell(versionsSeen.hangar)}, Node ${cell(versionsSeen.node)}, PostgreSQL ${cell(versionsSeen.postgresql)}, Redis ${cell(versionsSeen.redis)}, Fastify ${cell(versionsSeen.fastify)}, Kysely ${cell(versionsSeen.kysely)}, ${Object.entries(
      (versionsSeen.references as Record<string, string>) ?? {},
    )
      .map(([name, version]) => `${name} ${version}`)
      .join(", ")}, ${cell(versionsSeen.vina)}, Python / nbclient ${cell(versionsSeen.python_nbclient)}.`,
    "",
  ];
  await mkdir(args.out, { recursive: true });
  await writeFile(join(args.out, `${base}.json`), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(args.out, `${base}.md`), `${[...header, ...md].join("\n").trimEnd()}\n`);
  progress(
    `wrote ${relative(process.cwd(), join(args.out, `${base}.md`))} and ${base}.json in ${report.seconds} s`,
  );
  const failed = Object.entries(report.suites as Json).filter(([, s]) => at(s, "failed") !== undefined);
  if (failed.length > 0) {
    progress(`failed: ${failed.map(([name]) => name).join(", ")}`);
    process.exitCode = 1;
  }
}

try {
  await main();
} catch (error) {
  progress(`failed: ${(error as Error).message}`);
  process.exitCode = 1;
}
