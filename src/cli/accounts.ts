import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { createInterface } from "node:readline/promises";
import { type Command, Option } from "commander";
import { HangarClient, loginFile, readLogins } from "./client.ts";
import { integer, print } from "./options.ts";

interface Me {
  user: { id: string; email: string; name: string; platform_admin: boolean } | null;
  org_id: string;
  role: string;
  scopes: string[];
  orgs: { id: string; name: string; role: string }[];
}

interface Session {
  access_token: string;
  org_id: string;
  user_id: string;
}

interface KeyView {
  id: string;
  name: string;
  prefix: string;
  user_id: string;
  scopes: string[];
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  key?: string;
}

const ROLES = ["owner", "admin", "member", "viewer"];

/** The password from HANGAR_PASSWORD, or asked for on the terminal (never as an argument: shells keep history). */
async function password(prompt: string): Promise<string> {
  if (process.env.HANGAR_PASSWORD) return process.env.HANGAR_PASSWORD;
  if (!process.stdin.isTTY) throw new Error("No password: set HANGAR_PASSWORD or run on a terminal");
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return await rl.question(prompt);
  } finally {
    rl.close();
  }
}

/** The org a command acts on: --org, else the one the credentials act in. */
async function orgOf(client: HangarClient, org?: string): Promise<string> {
  return org ?? (await client.request<Me>("GET", "/api/v1/me")).org_id;
}

function saveLogin(url: string, email: string, key: string): string {
  const file = loginFile();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const logins = readLogins();
  logins[url] = { key, email };
  writeFileSync(file, `${JSON.stringify(logins, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

/** `hangar login`: signs in (or accepts an invitation) and keeps a personal API key for this server. */
async function login(options: { email?: string; org?: string; invitation?: string; name?: string }) {
  const url = HangarClient.urlFromEnv();
  const anonymous = new HangarClient(url, "");
  let session: Session;
  if (options.invitation) {
    session = await anonymous.request<Session>("POST", "/api/v1/invitations/accept", {
      token: options.invitation,
      password: await password("Choose a password (or your existing one): "),
      ...(options.name ? { name: options.name } : {}),
    });
  } else {
    if (!options.email) throw new Error("Give --email (or --invitation <token>)");
    session = await anonymous.request<Session>("POST", "/api/v1/auth/login", {
      email: options.email,
      password: await password(`Password for ${options.email}: `),
      ...(options.org ? { org: options.org } : {}),
    });
  }
  const client = new HangarClient(url, session.access_token);
  const me = await client.request<Me>("GET", "/api/v1/me");
  // The CLI acts with everything the user's role allows, as the web UI's session would.
  const scopes =
    me.role === "viewer" ? ["read"] : me.role === "member" ? ["read", "write"] : ["read", "write", "admin"];
  const key = await client.request<KeyView>("POST", `/api/v1/orgs/${session.org_id}/api-keys`, {
    name: `hangar CLI on ${hostname()}`,
    scopes,
  });
  const file = saveLogin(url, me.user?.email ?? "", key.key!);
  print(
    `signed in to ${url} as ${me.user?.email} (${me.role} of ${session.org_id}); API key ${key.prefix}… saved in ${file}`,
  );
}

export function addAccountCommands(program: Command): void {
  program
    .command("login")
    .description("sign in (password from HANGAR_PASSWORD or the terminal) and keep a personal API key")
    .option("--email <email>", "your account's email")
    .option("--org <id>", "the organization to act in (default: your first)")
    .option("--invitation <token>", "accept an invitation instead (creates the account when new)")
    .option("--name <name>", "your name, for a new account")
    .action(login);

  program
    .command("whoami")
    .description("show who the credentials act for")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const me = await HangarClient.fromEnv().request<Me>("GET", "/api/v1/me");
      if (options.json) return print(me);
      print(`${me.user?.email}  ${me.role} of ${me.org_id}  scopes ${me.scopes.join(",")}`);
      for (const org of me.orgs) print(`  ${org.id}  ${org.role.padEnd(7)}  ${org.name}`);
    });

  const org = program.command("org").description("organizations, members and limits");
  org
    .command("show")
    .description("show an organization and its members")
    .option("--org <id>")
    .option("--json", "print JSON")
    .action(async (options: { org?: string; json?: boolean }) => {
      const client = HangarClient.fromEnv();
      const id = await orgOf(client, options.org);
      const view = await client.request<Record<string, unknown>>("GET", `/api/v1/orgs/${id}`);
      const members = await client.request<{ members: { user_id: string; email: string; role: string }[] }>(
        "GET",
        `/api/v1/orgs/${id}/members`,
      );
      if (options.json) return print({ ...view, members: members.members });
      print(`${view.id}  ${view.name}`);
      print(
        `  default priority ${view.default_priority}; max running jobs ${view.max_running_jobs ?? "unlimited"}; max GPUs ${view.max_gpus ?? "unlimited"}; max instances ${view.max_instances ?? "unlimited"}`,
      );
      for (const m of members.members) print(`  ${m.user_id}  ${m.role.padEnd(7)}  ${m.email}`);
    });
  org
    .command("create")
    .description("create an organization (platform admins)")
    .argument("<name>")
    .option("--owner <email>", "its first owner (default: you)")
    .action(async (name: string, options: { owner?: string }) => {
      const created = await HangarClient.fromEnv().request<{ id: string }>("POST", "/api/v1/orgs", {
        name,
        ...(options.owner ? { owner_email: options.owner } : {}),
      });
      print(created.id);
    });
  org
    .command("invite")
    .description("invite someone by email; prints the token to hand them (shown once)")
    .argument("<email>")
    .addOption(new Option("--role <role>", "their role").choices(ROLES).default("member"))
    .option("--org <id>")
    .action(async (email: string, options: { role: string; org?: string }) => {
      const client = HangarClient.fromEnv();
      const invitation = await client.request<{ token: string; expires_at: string }>(
        "POST",
        `/api/v1/orgs/${await orgOf(client, options.org)}/invitations`,
        { email, role: options.role },
      );
      print(invitation.token);
      process.stderr.write(
        `they join with: hangar login --invitation <token> (expires ${invitation.expires_at})\n`,
      );
    });
  org
    .command("add-member")
    .description("add an existing user, or change their role")
    .argument("<email>")
    .addOption(new Option("--role <role>", "their role").choices(ROLES).default("member"))
    .option("--org <id>")
    .action(async (email: string, options: { role: string; org?: string }) => {
      const client = HangarClient.fromEnv();
      const added = await client.request<{ user_id: string; role: string }>(
        "POST",
        `/api/v1/orgs/${await orgOf(client, options.org)}/members`,
        { email, role: options.role },
      );
      print(`${added.user_id} is ${added.role}`);
    });
  org
    .command("remove-member")
    .description("remove a member (their keys and sessions end with it)")
    .argument("<user-id>")
    .option("--org <id>")
    .action(async (userId: string, options: { org?: string }) => {
      const client = HangarClient.fromEnv();
      await client.request("DELETE", `/api/v1/orgs/${await orgOf(client, options.org)}/members/${userId}`);
      print(`${userId} removed`);
    });
  org
    .command("limits")
    .description("set the default priority and concurrency limits (-1: no limit)")
    .option("--default-priority <n>", "priority of work that names none", integer)
    .option("--max-running-jobs <n>", "most jobs running at once", integer)
    .option("--max-gpus <n>", "most GPUs held at once", integer)
    .option("--max-instances <n>", "most instances its jobs occupy at once", integer)
    .option("--org <id>")
    .action(
      async (options: {
        defaultPriority?: number;
        maxRunningJobs?: number;
        maxGpus?: number;
        maxInstances?: number;
        org?: string;
      }) => {
        const client = HangarClient.fromEnv();
        const limit = (n: number | undefined) => (n === undefined ? undefined : n < 0 ? null : n);
        const view = await client.request("PATCH", `/api/v1/orgs/${await orgOf(client, options.org)}`, {
          ...(options.defaultPriority !== undefined ? { default_priority: options.defaultPriority } : {}),
          ...(options.maxRunningJobs !== undefined
            ? { max_running_jobs: limit(options.maxRunningJobs) }
            : {}),
          ...(options.maxGpus !== undefined ? { max_gpus: limit(options.maxGpus) } : {}),
          ...(options.maxInstances !== undefined ? { max_instances: limit(options.maxInstances) } : {}),
        });
        print(view);
      },
    );

  const keys = program.command("keys").description("API keys");
  keys
    .command("list")
    .option("--org <id>")
    .option("--json", "print JSON")
    .action(async (options: { org?: string; json?: boolean }) => {
      const client = HangarClient.fromEnv();
      const { api_keys } = await client.request<{ api_keys: KeyView[] }>(
        "GET",
        `/api/v1/orgs/${await orgOf(client, options.org)}/api-keys`,
      );
      if (options.json) return print(api_keys);
      for (const k of api_keys) {
        const state = k.revoked_at
          ? "revoked"
          : k.expires_at && Date.parse(k.expires_at) < Date.now()
            ? "expired"
            : "active";
        print(`${k.id}  ${k.prefix}…  ${state.padEnd(7)}  ${k.scopes.join(",").padEnd(16)}  ${k.name}`);
      }
    });
  keys
    .command("create")
    .description("create a key; its secret is printed once")
    .argument("<name>")
    .option("--scopes <list>", "comma-separated: read, write, admin (default: what your role uses)")
    .option("--expires-in-days <n>", "expiry", integer)
    .option("--user <id>", "for another member (admins)")
    .option("--org <id>")
    .action(
      async (
        name: string,
        options: { scopes?: string; expiresInDays?: number; user?: string; org?: string },
      ) => {
        const client = HangarClient.fromEnv();
        const created = await client.request<KeyView>(
          "POST",
          `/api/v1/orgs/${await orgOf(client, options.org)}/api-keys`,
          {
            name,
            ...(options.scopes ? { scopes: options.scopes.split(",").map((s) => s.trim()) } : {}),
            ...(options.expiresInDays ? { expires_in_days: options.expiresInDays } : {}),
            ...(options.user ? { user_id: options.user } : {}),
          },
        );
        print(created.key!);
        process.stderr.write(`${created.id}: shown once; store it now\n`);
      },
    );
  keys
    .command("revoke")
    .description("revoke a key; it stops working at once")
    .argument("<key-id>")
    .option("--org <id>")
    .action(async (keyId: string, options: { org?: string }) => {
      const client = HangarClient.fromEnv();
      await client.request("DELETE", `/api/v1/orgs/${await orgOf(client, options.org)}/api-keys/${keyId}`);
      print(`${keyId} revoked`);
    });

  const credits = program.command("credits").description("balance, ledger, grants and budgets");
  credits
    .command("show", { isDefault: true })
    .description("balance, holds and recent ledger entries")
    .option("--org <id>")
    .option("--json", "print JSON")
    .action(async (options: { org?: string; json?: boolean }) => {
      const client = HangarClient.fromEnv();
      const view = await client.request<{
        balance: string;
        held: string;
        spent: string;
        currency: string;
        entries: {
          at: string;
          kind: string;
          amount: string;
          from: string;
          to: string;
          subject: string | null;
        }[];
      }>("GET", `/api/v1/orgs/${await orgOf(client, options.org)}/credits`);
      if (options.json) return print(view);
      print(`balance ${view.balance} ${view.currency}   held ${view.held}   spent ${view.spent}`);
      for (const e of view.entries) {
        print(
          `  ${e.at}  ${e.kind.padEnd(7)}  ${e.amount.padStart(14)}  ${e.from} → ${e.to}  ${e.subject ?? ""}`,
        );
      }
    });
  credits
    .command("grant")
    .description("grant credits to an org (platform admins); idempotent by --reference")
    .argument("<amount>", 'e.g. "25.00"')
    .requiredOption("--org <id>")
    .requiredOption("--reference <ref>", "idempotency key, e.g. an invoice number")
    .option("--note <text>")
    .action(async (amount: string, options: { org: string; reference: string; note?: string }) => {
      const view = await HangarClient.fromEnv().request<{ created: boolean; balance: string }>(
        "POST",
        `/api/v1/orgs/${options.org}/credits`,
        { amount, reference: options.reference, ...(options.note ? { note: options.note } : {}) },
      );
      print(`${view.created ? "granted" : "already granted"}; balance ${view.balance}`);
    });
  credits
    .command("budget")
    .description("set a monthly spending limit for the org (or one member)")
    .argument("<amount>", 'e.g. "500"')
    .addOption(new Option("--action <action>", "at 100%").choices(["refuse", "stop"]).default("refuse"))
    .option("--webhook <url>", "POSTed at 50%, 80% and 100%")
    .option("--user <id>", "a member's own limit")
    .option("--org <id>")
    .action(
      async (amount: string, options: { action: string; webhook?: string; user?: string; org?: string }) => {
        const client = HangarClient.fromEnv();
        const view = await client.request("PUT", `/api/v1/orgs/${await orgOf(client, options.org)}/budgets`, {
          monthly_limit: amount,
          action: options.action,
          ...(options.webhook ? { webhook_url: options.webhook } : {}),
          ...(options.user ? { user_id: options.user } : {}),
        });
        print(view);
      },
    );

  program
    .command("usage")
    .description("instance time and cost, grouped")
    .addOption(
      new Option("--group-by <what>", "how rows are grouped")
        .choices(["user", "model", "gpu_type", "provider", "day"])
        .default("day"),
    )
    .option("--from <date>", "ISO date or time (default: 30 days ago)")
    .option("--to <date>", "ISO date or time (default: now)")
    .option("--csv", "print CSV")
    .option("--org <id>")
    .action(async (options: { groupBy: string; from?: string; to?: string; csv?: boolean; org?: string }) => {
      const client = HangarClient.fromEnv();
      const query = new URLSearchParams({ group_by: options.groupBy, format: options.csv ? "csv" : "json" });
      if (options.from) query.set("from", new Date(options.from).toISOString());
      if (options.to) query.set("to", new Date(options.to).toISOString());
      const path = `/api/v1/orgs/${await orgOf(client, options.org)}/usage?${query}`;
      if (options.csv) return void process.stdout.write(await client.request<string>("GET", path));
      const view = await client.request<{
        rows: { group: string; attempts: number; busy_seconds: number; cost: string }[];
        total: string;
      }>("GET", path);
      print(`${options.groupBy.toUpperCase().padEnd(24)} ATTEMPTS  BUSY (s)      COST`);
      for (const r of view.rows) {
        print(
          `${(r.group || "-").padEnd(24)} ${String(r.attempts).padStart(8)}  ${String(r.busy_seconds).padStart(8)}  ${r.cost.padStart(12)}`,
        );
      }
      print(`${"total".padEnd(44)} ${view.total.padStart(12)}`);
    });
}
