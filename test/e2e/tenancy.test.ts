import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { SignJWT } from "jose";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY, waitFor } from "../helpers/server.ts";
import { DIALECTS, type StoreFixture } from "../helpers/stores.ts";

const SIGNING_SECRET = "tenancy-test-signing-secret-0123456789";
const RUNPOD_SECRET = "rp_tenancy_secret_credential_42";
const PASSWORDS = { bob: "bob-password-123", carol: "carol-password-123", dave: "dave-password-123" };
const NOTEBOOK = JSON.stringify({
  nbformat: 4,
  nbformat_minor: 5,
  metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" } },
  cells: [
    {
      id: "c0",
      cell_type: "code",
      metadata: {},
      source: "print('tenancy')",
      outputs: [],
      execution_count: null,
    },
  ],
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are inspected field by field
  json: any;
}

for (const dialect of DIALECTS) {
  describe(`organizations, users and credits: ${dialect.name}`, { timeout: 240_000 }, () => {
    let fixture: StoreFixture;
    let server: ServerProcess;
    /** Every response body, for the scan for secrets at the end. */
    const responses: string[] = [];
    const secretsShownOnce = new Set<string>();

    const call = async (
      path: string,
      options: { method?: string; token?: string | null; json?: unknown; form?: FormData } = {},
    ): Promise<Answer> => {
      const headers: Record<string, string> = {};
      const token = options.token === undefined ? TEST_API_KEY : options.token;
      if (token) headers.authorization = `Bearer ${token}`;
      let body: RequestInit["body"];
      if (options.json !== undefined) {
        headers["content-type"] = "application/json";
        body = JSON.stringify(options.json);
      } else if (options.form) body = options.form;
      const response = await fetch(`${server.url}${path}`, {
        method: options.method ?? "GET",
        headers,
        body,
      });
      const text = await response.text();
      responses.push(text);
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
      return { status: response.status, headers: response.headers, text, json };
    };
    const expectError = (answer: Answer, status: number, code: string) => {
      assert.equal(answer.status, status, answer.text);
      assert.equal(answer.json?.error?.code, code, answer.text);
    };
    const uploadNotebook = async (token: string) => {
      const form = new FormData();
      form.append("file", new Blob([NOTEBOOK], { type: "application/json" }), "tenancy.ipynb");
      const answer = await call("/api/v1/notebooks", { method: "POST", token, form });
      assert.equal(answer.status, 201, answer.text);
      return answer.json.id as string;
    };
    const finished = (token: string, runId: string) =>
      waitFor(`run ${runId} to end`, async () => {
        const run = await call(`/api/v1/runs/${runId}`, { token });
        return ["succeeded", "failed", "cancelled"].includes(run.json.status) ? run.json : null;
      });

    let orgB: string;
    let bobSession: { access_token: string; refresh_token: string };
    let bobKey: string;
    let bobKeyId: string;
    let carolKey: string;
    let daveKey: string;
    let adminNotebook: string;
    let adminRun: string;

    before(async () => {
      fixture = await dialect.fixture();
      server = await spawnServer({
        ...fixture.env,
        HANGAR_SIGNING_SECRET: SIGNING_SECRET,
        // 3.6 $/h for a CPU instance: exactly 1 µ per millisecond, so charges read as busy time.
        HANGAR_LOCAL_PRICE_PER_HOUR: "cpu:3.6",
        HANGAR_RATE_LIMIT_PER_MINUTE: "600",
        HANGAR_BILLING_INTERVAL_S: "1",
        HANGAR_LOG_LEVEL: "info",
      });
      const adminOwnCredits = await call("/api/v1/orgs/org_default/credits", {
        method: "POST",
        json: { amount: "100", reference: "admin-start" },
      });
      assert.equal(adminOwnCredits.status, 201, adminOwnCredits.text);
    });
    after(async () => {
      await stopServer(server);
      await fixture.cleanup();
    });

    it("lets a platform admin create an org and invite its owner, who signs in and makes a key", async () => {
      const created = await call("/api/v1/orgs", { method: "POST", json: { name: "Lab B" } });
      assert.equal(created.status, 201, created.text);
      orgB = created.json.id;
      const invitation = await call(`/api/v1/orgs/${orgB}/invitations`, {
        method: "POST",
        json: { email: "bob@example.org", role: "owner" },
      });
      assert.equal(invitation.status, 201, invitation.text);
      secretsShownOnce.add(invitation.json.token);
      const accepted = await call("/api/v1/invitations/accept", {
        method: "POST",
        token: null,
        json: { token: invitation.json.token, password: PASSWORDS.bob, name: "Bob" },
      });
      assert.equal(accepted.status, 201, accepted.text);
      assert.equal(accepted.json.org_id, orgB);
      const again = await call("/api/v1/invitations/accept", {
        method: "POST",
        token: null,
        json: { token: invitation.json.token, password: PASSWORDS.bob },
      });
      expectError(again, 401, "unauthorized");
      const login = await call("/api/v1/auth/login", {
        method: "POST",
        token: null,
        json: { email: "bob@example.org", password: PASSWORDS.bob },
      });
      assert.equal(login.status, 200, login.text);
      bobSession = login.json;
      const me = await call("/api/v1/me", { token: bobSession.access_token });
      assert.deepEqual(
        [me.json.org_id, me.json.role, me.json.user.email],
        [orgB, "owner", "bob@example.org"],
      );
      const key = await call(`/api/v1/orgs/${orgB}/api-keys`, {
        method: "POST",
        token: bobSession.access_token,
        json: { name: "bob laptop", scopes: ["read", "write", "admin"] },
      });
      assert.equal(key.status, 201, key.text);
      bobKey = key.json.key;
      bobKeyId = key.json.id;
      assert.match(bobKey, /^hgr_/);
      const listed = await call(`/api/v1/orgs/${orgB}/api-keys`, { token: bobKey });
      assert.ok(
        listed.json.api_keys.some(
          (k: { id: string; prefix: string }) => k.id === bobKeyId && bobKey.startsWith(k.prefix),
        ),
      );
      assert.ok(!listed.text.includes(bobKey), "a key's secret is shown once, at creation");
      const wrong = await call("/api/v1/auth/login", {
        method: "POST",
        token: null,
        json: { email: "bob@example.org", password: "not-his-password" },
      });
      expectError(wrong, 401, "unauthorized");
    });

    it("keeps two orgs apart: nothing of one is visible or usable from the other", async () => {
      adminNotebook = await uploadNotebook(TEST_API_KEY);
      const run = await call(`/api/v1/notebooks/${adminNotebook}/runs`, {
        method: "POST",
        json: { timeout_s: 120 },
      });
      assert.equal(run.status, 201, run.text);
      adminRun = run.json.id;
      for (const path of [
        `/api/v1/notebooks/${adminNotebook}`,
        `/api/v1/runs/${adminRun}`,
        `/api/v1/runs/${adminRun}/download`,
        `/api/v1/runs/${adminRun}/usage`,
        `/api/v1/runs/${adminRun}/logs`,
        "/api/v1/orgs/org_default",
        "/api/v1/orgs/org_default/credits",
        "/api/v1/orgs/org_default/members",
      ]) {
        assert.equal((await call(path, { token: bobKey })).status, 404, `${path} from the other org`);
      }
      expectError(
        await call(`/api/v1/notebooks/${adminNotebook}/runs`, { method: "POST", token: bobKey, json: {} }),
        404,
        "notebook_not_found",
      );
      expectError(
        await call(`/api/v1/runs/${adminRun}/cancel`, { method: "POST", token: bobKey }),
        404,
        "run_not_found",
      );
      assert.deepEqual((await call("/api/v1/runs", { token: bobKey })).json.runs, []);
      assert.deepEqual((await call("/api/v1/notebooks", { token: bobKey })).json.notebooks, []);
    });

    it("refuses work the balance cannot cover with 402 and the figures, storing nothing", async () => {
      const notebook = await uploadNotebook(bobKey);
      const refused = await call(`/api/v1/notebooks/${notebook}/runs`, {
        method: "POST",
        token: bobKey,
        json: { timeout_s: 60 },
      });
      expectError(refused, 402, "insufficient_credits");
      assert.deepEqual(refused.json.error.details, {
        estimate: "0.060000",
        balance: "0.000000",
        shortfall: "0.060000",
        price_per_hour: "3.600000",
      });
      assert.match(refused.json.error.message, /0\.060000.*0\.000000.*0\.060000 short/);
      assert.deepEqual((await call("/api/v1/runs", { token: bobKey })).json.runs, []);
    });

    it("lets only platform admins grant credits, once per reference", async () => {
      expectError(
        await call(`/api/v1/orgs/${orgB}/credits`, {
          method: "POST",
          token: bobKey,
          json: { amount: "5", reference: "self" },
        }),
        403,
        "platform_admin_required",
      );
      const grant = await call(`/api/v1/orgs/${orgB}/credits`, {
        method: "POST",
        json: { amount: "1.000000", reference: "welcome" },
      });
      assert.equal(grant.status, 201, grant.text);
      const twice = await call(`/api/v1/orgs/${orgB}/credits`, {
        method: "POST",
        json: { amount: "1", reference: "welcome" },
      });
      assert.equal(twice.status, 200);
      assert.equal(twice.json.balance, "1.000000");
    });

    it("charges a finished run its busy time × price to the micro-unit, and releases the rest of its hold", async () => {
      const notebook = await uploadNotebook(bobKey);
      const submitted = await call(`/api/v1/notebooks/${notebook}/runs`, {
        method: "POST",
        token: bobKey,
        json: { timeout_s: 120 },
      });
      assert.equal(submitted.status, 201, submitted.text);
      const held = await call(`/api/v1/orgs/${orgB}/credits`, { token: bobKey });
      assert.equal(held.json.held, "0.120000", "price × timeout is held at submit");
      const run = await finished(bobKey, submitted.json.id);
      assert.equal(run.status, "succeeded");
      const usage = (await call(`/api/v1/runs/${run.id}/usage`, { token: bobKey })).json;
      assert.equal(usage.attempts.length, 1);
      const attempt = usage.attempts[0];
      assert.equal(attempt.price_per_hour, "3.600000");
      assert.equal(attempt.share, 1);
      assert.ok(attempt.busy_ms > 0);
      // 3.6 $/h is 1 µ per ms: the charge is the busy time, exactly.
      assert.equal(attempt.cost, (attempt.busy_ms / 1e6).toFixed(6));
      const settled = await waitFor("the hold to be settled", async () => {
        const credits = (await call(`/api/v1/orgs/${orgB}/credits`, { token: bobKey })).json;
        return credits.held === "0.000000" ? credits : null;
      });
      assert.equal(settled.spent, usage.cost);
      assert.equal(settled.balance, ((1_000_000 - attempt.busy_ms) / 1e6).toFixed(6));
      const csv = await call(`/api/v1/orgs/${orgB}/usage?group_by=user&format=csv`, { token: bobKey });
      assert.equal(csv.headers.get("content-type"), "text/csv; charset=utf-8");
      assert.match(
        csv.text,
        new RegExp(
          `^user,attempts,busy_seconds,cost\\nuser_[0-9a-f]+,1,${attempt.busy_ms / 1000},${usage.cost}\\n$`,
        ),
      );
    });

    it("holds each role to its rights and each key to its scopes", async () => {
      const join = async (email: string, role: string, password: string) => {
        const invitation = await call(`/api/v1/orgs/${orgB}/invitations`, {
          method: "POST",
          token: bobKey,
          json: { email, role },
        });
        const session = await call("/api/v1/invitations/accept", {
          method: "POST",
          token: null,
          json: { token: invitation.json.token, password },
        });
        const key = await call(`/api/v1/orgs/${orgB}/api-keys`, {
          method: "POST",
          token: session.json.access_token,
          json: { name: `${role} key` },
        });
        assert.equal(key.status, 201, key.text);
        return key.json.key as string;
      };
      carolKey = await join("carol@example.org", "viewer", PASSWORDS.carol);
      daveKey = await join("dave@example.org", "member", PASSWORDS.dave);
      assert.equal((await call("/api/v1/runs", { token: carolKey })).status, 200);
      expectError(
        await call("/api/v1/datasets", { method: "POST", token: carolKey, form: new FormData() }),
        403,
        "forbidden",
      );
      expectError(
        await call(`/api/v1/orgs/${orgB}/api-keys/${bobKeyId}`, { method: "DELETE", token: daveKey }),
        403,
        "forbidden",
      );
      expectError(
        await call(`/api/v1/orgs/${orgB}/credits`, {
          method: "POST",
          token: daveKey,
          json: { amount: "1", reference: "x" },
        }),
        403,
        "platform_admin_required",
      );
      expectError(
        await call("/api/v1/orgs", { method: "POST", token: bobKey, json: { name: "mine" } }),
        403,
        "platform_admin_required",
      );
      expectError(
        await call(`/api/v1/orgs/${orgB}/members`, {
          method: "POST",
          token: daveKey,
          json: { email: "carol@example.org", role: "admin" },
        }),
        403,
        "forbidden",
      );
      // A member's own keys default to read and write; asking for admin is refused.
      const daveAdmin = await call(`/api/v1/orgs/${orgB}/api-keys`, {
        method: "POST",
        token: daveKey,
        json: { name: "more", scopes: ["admin"] },
      });
      expectError(daveAdmin, 403, "scope_not_grantable");
      const readOnly = await call(`/api/v1/orgs/${orgB}/api-keys`, {
        method: "POST",
        token: bobKey,
        json: { name: "read only", scopes: ["read"] },
      });
      expectError(
        await call("/api/v1/datasets", { method: "POST", token: readOnly.json.key, form: new FormData() }),
        403,
        "forbidden",
      );
      // The platform admin who made the org was its first owner; bob, an owner too, may remove it,
      // but an org always keeps one owner.
      assert.equal(
        (await call(`/api/v1/orgs/${orgB}/members/user_admin`, { method: "DELETE", token: bobKey })).status,
        204,
      );
      const me = (await call("/api/v1/me", { token: bobKey })).json.user.id;
      expectError(
        await call(`/api/v1/orgs/${orgB}/members/${me}`, { method: "DELETE", token: bobKey }),
        409,
        "last_owner",
      );
      // A key carries its user's current role: a demotion and a removal hold from the next request,
      // though the server had just found (and cached) the key.
      const erinKey = await join("erin@example.org", "member", "erin-password-123");
      const erin = (await call("/api/v1/me", { token: erinKey })).json.user.id;
      const demoted = await call(`/api/v1/orgs/${orgB}/members`, {
        method: "POST",
        token: bobKey,
        json: { email: "erin@example.org", role: "viewer" },
      });
      assert.equal(demoted.status, 201, demoted.text);
      expectError(
        await call("/api/v1/datasets", { method: "POST", token: erinKey, form: new FormData() }),
        403,
        "forbidden",
      );
      assert.equal(
        (await call(`/api/v1/orgs/${orgB}/members/${erin}`, { method: "DELETE", token: bobKey })).status,
        204,
      );
      expectError(await call("/api/v1/runs", { token: erinKey }), 401, "unauthorized");
    });

    it("answers 401 to tampered and expired tokens, and to a revoked key at once", async () => {
      const [head, payload, signature] = bobSession.access_token.split(".");
      const flipped = `${head}.${payload}.${signature!.slice(0, -2)}${signature!.endsWith("AA") ? "BB" : "AA"}`;
      expectError(await call("/api/v1/runs", { token: flipped }), 401, "unauthorized");
      const forged = JSON.parse(Buffer.from(payload!, "base64url").toString());
      const otherOrg = Buffer.from(JSON.stringify({ ...forged, org: "org_default" })).toString("base64url");
      expectError(
        await call("/api/v1/runs", { token: `${head}.${otherOrg}.${signature}` }),
        401,
        "unauthorized",
      );
      const key = createHmac("sha256", SIGNING_SECRET).update("hangar access tokens").digest();
      const now = Math.floor(Date.now() / 1000);
      const expired = await new SignJWT({ org: orgB })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(forged.sub)
        .setIssuer("hangar")
        .setIssuedAt(now - 120)
        .setExpirationTime(now - 60)
        .sign(key);
      const answer = await call("/api/v1/runs", { token: expired });
      expectError(answer, 401, "unauthorized");
      assert.match(answer.json.error.message, /expired/);
      const temporary = await call(`/api/v1/orgs/${orgB}/api-keys`, {
        method: "POST",
        token: bobKey,
        json: { name: "temp" },
      });
      assert.equal((await call("/api/v1/runs", { token: temporary.json.key })).status, 200);
      const revoked = await call(`/api/v1/orgs/${orgB}/api-keys/${temporary.json.id}`, {
        method: "DELETE",
        token: bobKey,
      });
      assert.ok(revoked.json.revoked_at);
      expectError(await call("/api/v1/runs", { token: temporary.json.key }), 401, "unauthorized");
    });

    it("rotates refresh tokens once each, and signs out", async () => {
      const refreshed = await call("/api/v1/auth/refresh", {
        method: "POST",
        token: null,
        json: { refresh_token: bobSession.refresh_token },
      });
      assert.equal(refreshed.status, 200, refreshed.text);
      const reused = await call("/api/v1/auth/refresh", {
        method: "POST",
        token: null,
        json: { refresh_token: bobSession.refresh_token },
      });
      expectError(reused, 401, "unauthorized");
      const out = await call("/api/v1/auth/logout", {
        method: "POST",
        token: null,
        json: { refresh_token: refreshed.json.refresh_token },
      });
      assert.equal(out.status, 204);
      expectError(
        await call("/api/v1/auth/refresh", {
          method: "POST",
          token: null,
          json: { refresh_token: refreshed.json.refresh_token },
        }),
        401,
        "unauthorized",
      );
    });

    it("does not open one org's files with a URL signed for another's", async () => {
      await finished(TEST_API_KEY, adminRun);
      const bobRuns = (await call("/api/v1/runs", { token: bobKey })).json.runs;
      const bobLinks = (await call(`/api/v1/runs/${bobRuns[0].id}/download`, { token: bobKey })).json;
      const url = new URL(bobLinks.executed_notebook.url);
      assert.equal((await fetch(url)).status, 200);
      const pointed = new URL(url.toString().replaceAll(bobRuns[0].id, adminRun));
      assert.notEqual(pointed.toString(), url.toString());
      assert.equal((await fetch(pointed)).status, 403);
    });

    it("refuses new work once a budget is spent, and raises its threshold events", async () => {
      const set = await call(`/api/v1/orgs/${orgB}/budgets`, {
        method: "PUT",
        token: bobKey,
        json: { monthly_limit: "0.000001", action: "refuse" },
      });
      assert.equal(set.status, 200, set.text);
      const events = await waitFor("budget events", async () => {
        const view = (await call(`/api/v1/orgs/${orgB}/budgets`, { token: bobKey })).json;
        return view.events.length === 3 ? view.events : null;
      });
      assert.deepEqual(
        events
          .map((e: { threshold_percent: number }) => e.threshold_percent)
          .sort((a: number, b: number) => a - b),
        [50, 80, 100],
      );
      const notebook = (await call("/api/v1/notebooks", { token: daveKey })).json.notebooks[0].id;
      const refused = await call(`/api/v1/notebooks/${notebook}/runs`, {
        method: "POST",
        token: daveKey,
        json: { timeout_s: 10 },
      });
      expectError(refused, 402, "budget_exhausted");
      assert.equal(
        (await call(`/api/v1/orgs/${orgB}/budgets`, { method: "DELETE", token: bobKey })).status,
        204,
      );
    });

    it("answers 429 with Retry-After past a key's rate limit", async () => {
      let answer: Answer | undefined;
      // 600 a minute refills 10 a second: on a slow machine the bucket takes more than 600 calls to empty.
      for (let i = 0; i < 3_000 && answer?.status !== 429; i++)
        answer = await call("/api/v1/runs", { token: carolKey });
      expectError(answer!, 429, "rate_limited");
      assert.ok(Number(answer!.headers.get("retry-after")) >= 1);
      // Another user of the same org is not slowed by carol's bucket.
      const dave = await call("/api/v1/runs", { token: daveKey });
      assert.equal(dave.status, 200, dave.text);
    });

    it("never logs or returns a secret it was given", async () => {
      const stored = await call("/api/v1/providers/runpod/credentials", {
        method: "PUT",
        json: { api_key: RUNPOD_SECRET },
      });
      assert.equal(stored.status, 200, stored.text);
      expectError(
        await call("/api/v1/providers/runpod/credentials", {
          method: "PUT",
          token: bobKey,
          json: { api_key: "x" },
        }),
        403,
        "clouds_per_deployment",
      );
      const secrets = [
        TEST_API_KEY,
        bobKey,
        carolKey,
        daveKey,
        RUNPOD_SECRET,
        bobSession.refresh_token,
        ...Object.values(PASSWORDS),
        ...secretsShownOnce,
      ];
      const log = server.output();
      for (const secret of secrets) assert.ok(!log.includes(secret), `a secret is in the server's log`);
      // Responses that create a secret show it once; no other response carries any.
      const creating = new Set(
        secrets.filter((s) => s !== RUNPOD_SECRET && !Object.values(PASSWORDS).includes(s)),
      );
      for (const body of responses) {
        for (const secret of secrets) {
          if (!body.includes(secret)) continue;
          const parsed = JSON.parse(body);
          assert.ok(
            creating.has(secret) &&
              (parsed.key === secret || parsed.token === secret || parsed.refresh_token === secret),
            `a response carries a secret it did not create: ${body.slice(0, 120)}`,
          );
        }
      }
    });
  });
}
