import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LogShipper } from "../../src/agent/log-shipper.ts";

interface Sent {
  path: string;
  items: {
    job_id: string;
    lease_token: string;
    attempt: number;
    entries: { seq: number; ts: number; stream: string; text: string }[];
  }[];
}

/** A control plane that records each request and answers with `answer` (or throws what it returns). */
function controlPlane(answer: (sent: Sent) => { lost: string[] } | Error = () => ({ lost: [] })) {
  const requests: Sent[] = [];
  return {
    requests,
    client: {
      async post<T>(path: string, body: unknown): Promise<T | null> {
        const sent = { path, ...(body as Omit<Sent, "path">) };
        requests.push(sent);
        const reply = answer(sent);
        if (reply instanceof Error) throw reply;
        return reply as T;
      },
    },
  };
}

const attempt = (job_id: string, log_seq_after = 0) => ({
  job_id,
  lease_token: `tok_${job_id}`,
  attempt: 2,
  log_seq_after,
});
const texts = (sent: Sent | undefined) =>
  Object.fromEntries(
    (sent?.items ?? []).map((item) => [item.job_id, item.entries.map((e) => `${e.seq}:${e.text}`)]),
  );

describe("the agent's log shipper", () => {
  it("ships every attempt's new lines in one request, numbered after the lines already stored", async () => {
    const { client, requests } = controlPlane();
    const shipper = new LogShipper(client, 60_000);
    const logs = Array.from({ length: 64 }, (_, i) => shipper.open(attempt(`job_${i}`, i === 0 ? 5 : 0)));
    for (const [i, log] of logs.entries()) log.write("stdout", `out ${i}\n`);
    logs[0]!.line("started");
    logs[1]!.write("stderr", "");
    await shipper.flush();
    assert.equal(requests.length, 1);
    assert.equal(requests[0]!.path, "/agent/v1/logs");
    assert.equal(requests[0]!.items.length, 64);
    assert.deepEqual(requests[0]!.items[0], {
      job_id: "job_0",
      lease_token: "tok_job_0",
      attempt: 2,
      entries: [
        { seq: 6, ts: requests[0]!.items[0]!.entries[0]!.ts, stream: "stdout", text: "out 0\n" },
        { seq: 7, ts: requests[0]!.items[0]!.entries[1]!.ts, stream: "hangar", text: "[hangar] started\n" },
      ],
    });
    await shipper.flush();
    assert.equal(requests.length, 1, "nothing new, nothing sent");
    await shipper.close();
  });

  it("keeps the lines of a failed request for the next, and caps each request at 1,000 lines", async () => {
    let fail = true;
    const { client, requests } = controlPlane(() => (fail ? new Error("connection refused") : { lost: [] }));
    const shipper = new LogShipper(client, 60_000);
    const a = shipper.open(attempt("a"));
    const b = shipper.open(attempt("b"));
    for (let i = 0; i < 900; i++) a.write("stdout", `a${i}\n`);
    for (let i = 0; i < 300; i++) b.write("stdout", `b${i}\n`);
    await assert.rejects(shipper.flush(), /connection refused/);
    fail = false;
    await shipper.flush();
    const shipped = requests.slice(1);
    assert.deepEqual(
      shipped.map((r) => r.items.reduce((n, item) => n + item.entries.length, 0)),
      [1000, 200],
    );
    const seqs = (job: string) =>
      shipped.flatMap((r) =>
        r.items.filter((i) => i.job_id === job).flatMap((i) => i.entries.map((e) => e.seq)),
      );
    assert.deepEqual(
      seqs("a"),
      Array.from({ length: 900 }, (_, i) => i + 1),
    );
    assert.deepEqual(
      seqs("b"),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    await shipper.close();
  });

  it("ships no more for an attempt whose lease is lost, and hands a taken attempt's lines to its finish", async () => {
    const { client, requests } = controlPlane((sent) => ({
      lost: sent.items.filter((item) => item.job_id === "gone").map((item) => item.job_id),
    }));
    const shipper = new LogShipper(client, 60_000);
    const gone = shipper.open(attempt("gone"));
    const done = shipper.open(attempt("done"));
    const live = shipper.open(attempt("live"));
    gone.write("stdout", "1\n");
    done.write("stdout", "shipped\n");
    live.write("stdout", "1\n");
    await shipper.flush();
    gone.write("stdout", "2\n");
    done.write("stdout", "with the finish\n");
    assert.deepEqual(
      (await done.take()).map((e) => [e.seq, e.text]),
      [[2, "with the finish\n"]],
    );
    done.write("stdout", "after take\n");
    live.write("stdout", "2\n");
    await shipper.close();
    assert.deepEqual(texts(requests[1]), { live: ["2:2\n"] });
    assert.equal(requests.length, 2);
  });
});
