import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "../../src/server/server.ts";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";

const exec = promisify(execFile);

describe("the CLI's accounts commands: login, org, keys, credits, usage", { timeout: 120_000 }, () => {
  let server: ServerProcess;
  let configDir: string;

  /** Runs ./hangar as a user would; `as` null uses the key `hangar login` saved. */
  const hangar = async (
    args: string[],
    as: string | null = TEST_API_KEY,
    extra: Record<string, string> = {},
  ) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HANGAR_URL: server.url,
      HANGAR_CONFIG_DIR: configDir,
      ...extra,
    };
    delete env.HANGAR_API_KEY;
    if (as) env.HANGAR_API_KEY = as;
    const result: Promise<{ stdout: string; stderr: string; code?: number }> = exec(
      join(REPO_ROOT, "hangar"),
      args,
      {
        env,
      },
    ).catch((error: { stdout: string; stderr: string; code: number }) => error);
    return result;
  };

  before(async () => {
    server = await spawnServer();
    configDir = await mkdtemp(join(tmpdir(), "hangar-cli-config-"));
  });
  after(async () => {
    await stopServer(server);
    await rm(configDir, { recursive: true, force: true });
  });

  it("creates an org, invites its owner who logs in with the CLI, and keeps that key for later commands", async () => {
    const orgId = (await hangar(["org", "create", "CLI Lab"])).stdout.trim();
    assert.match(orgId, /^org_[0-9a-f]+$/);
    const token = (
      await hangar(["org", "invite", "erin@example.org", "--role", "owner", "--org", orgId])
    ).stdout.trim();
    assert.match(token, /^hgri_/);
    const login = await hangar(["login", "--invitation", token, "--name", "Erin"], null, {
      HANGAR_PASSWORD: "erin-password-123",
    });
    assert.match(login.stdout, /signed in .* as erin@example\.org \(owner of org_/);
    const saved = join(configDir, "logins.json");
    assert.equal((await stat(saved)).mode & 0o777, 0o600);
    assert.match(await readFile(saved, "utf8"), /"key": "hgr_/);
    const whoami = await hangar(["whoami", "--json"], null);
    assert.equal(JSON.parse(whoami.stdout).org_id, orgId);
    const again = await hangar(["login", "--email", "erin@example.org"], null, {
      HANGAR_PASSWORD: "wrong-password-0",
    });
    assert.equal(again.code, 2);
    assert.match(again.stderr, /Wrong email or password \(unauthorized, HTTP 401\)/);

    const keys = await hangar(["keys", "list"], null);
    assert.match(keys.stdout, /active\s+read,write,admin\s+hangar CLI on /);
    const created = await hangar(["keys", "create", "ci", "--scopes", "read"], null);
    assert.match(created.stdout.trim(), /^hgr_/);
    const keyId = /^(key_[0-9a-f]+):/.exec(created.stderr)?.[1];
    assert.ok(keyId, created.stderr);
    assert.equal((await hangar(["whoami"], created.stdout.trim())).code, undefined);
    assert.match((await hangar(["keys", "revoke", keyId!], null)).stdout, /revoked/);
    const revoked = await hangar(["whoami"], created.stdout.trim());
    assert.equal(revoked.code, 2);
    assert.match(revoked.stderr, /revoked API key/);

    const refused = await hangar(["credits", "grant", "10", "--org", orgId, "--reference", "inv-1"], null);
    assert.match(refused.stderr, /platform_admin_required/);
    assert.match(
      (await hangar(["credits", "grant", "10", "--org", orgId, "--reference", "inv-1"])).stdout,
      /^granted; balance 10\.000000/,
    );
    assert.match(
      (await hangar(["credits", "grant", "10", "--org", orgId, "--reference", "inv-1"])).stdout,
      /^already granted; balance 10\.000000/,
    );
    const credits = await hangar(["credits"], null);
    assert.match(
      credits.stdout,
      /^balance 10\.000000 USD {3}held 0\.000000 {3}spent 0\.000000\n.*grant\s+10\.000000\s+external → available/,
    );

    const limits = await hangar(
      ["org", "limits", "--max-running-jobs", "3", "--default-priority", "5"],
      null,
    );
    assert.match(limits.stdout, /"max_running_jobs": 3/, limits.stderr);
    const show = await hangar(["org", "show"], null);
    assert.match(show.stdout, /max running jobs 3; max GPUs unlimited/);
    assert.match(show.stdout, /owner\s+erin@example\.org/);
    const usage = await hangar(["usage", "--group-by", "model", "--csv"], null);
    assert.equal(usage.stdout, "model,attempts,busy_seconds,cost\n");
  });
});
