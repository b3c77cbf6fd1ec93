import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { BlobStore } from "../../src/blob/blob-store.ts";
import { HangarError } from "../../src/domain/errors.ts";

export interface BlobStoreHarness {
  store: BlobStore;
  /** How a client reaches a signed URL (a plain `fetch` unless the adapter needs the URL rewritten). */
  fetchSigned: (url: string, init?: RequestInit) => Promise<Response>;
  cleanup: () => Promise<void>;
  /** For stores that take a key prefix: another store on the same bucket or container under `keyPrefix`. */
  storeWithPrefix?: (keyPrefix: string) => Promise<BlobStore>;
}

const UNSAFE_KEYS = ["../x", "/abs", "a/../../b", "a\0b", "", "a//b", "C:/x", "a\\b"];

/**
 * The behaviour every BlobStore adapter must share, registered as node:test cases. Each case gets
 * a fresh, empty store from `makeStore` and calls its `cleanup` afterwards.
 */
export function runBlobStoreConformance(name: string, makeStore: () => Promise<BlobStoreHarness>): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let harness: BlobStoreHarness;
    let store: BlobStore;

    beforeEach(async () => {
      harness = await makeStore();
      store = harness.store;
    });
    afterEach(() => harness.cleanup());

    const read = async (key: string) => buffer(await store.get(key));
    const keys = async (prefix: string) => (await store.list(prefix)).map((object) => object.key);

    it("round-trips bytes and reports their size", async () => {
      const body = Buffer.from("notebook body ✓");
      assert.deepEqual(await store.put("notebooks/nb_1/main.ipynb", body), {
        key: "notebooks/nb_1/main.ipynb",
        size: body.length,
      });
      assert.deepEqual(await read("notebooks/nb_1/main.ipynb"), body);
      assert.deepEqual(await store.stat("notebooks/nb_1/main.ipynb"), {
        key: "notebooks/nb_1/main.ipynb",
        size: body.length,
      });
    });

    it("round-trips a multi-chunk stream", async () => {
      const chunks = [randomBytes(70_000), randomBytes(1), randomBytes(130_000)];
      const result = await store.put("datasets/ds_1/big.bin", Readable.from(chunks));
      const expected = Buffer.concat(chunks);
      assert.deepEqual(result, { key: "datasets/ds_1/big.bin", size: expected.length });
      assert.deepEqual(await read("datasets/ds_1/big.bin"), expected);
    });

    it("stores an empty object", async () => {
      assert.deepEqual(await store.put("runs/run_1/empty.txt", new Uint8Array()), {
        key: "runs/run_1/empty.txt",
        size: 0,
      });
      assert.equal((await read("runs/run_1/empty.txt")).length, 0);
    });

    it("overwrites an existing key", async () => {
      await store.put("k/object", Buffer.from("first, longer version"));
      await store.put("k/object", Buffer.from("second"));
      assert.equal((await read("k/object")).toString(), "second");
      assert.deepEqual(await store.stat("k/object"), { key: "k/object", size: 6 });
    });

    it("stat of a missing key is null", async () => {
      assert.equal(await store.stat("missing/key"), null);
    });

    it("get of a missing key throws 404 blob_not_found", async () => {
      await assert.rejects(store.get("missing/key"), isHangarError(404, "blob_not_found"));
    });

    it("lists by prefix, sorted, only under the prefix", async () => {
      for (const key of ["b/1", "a/2/x", "ab", "a/1", "a/10"]) await store.put(key, Buffer.from(key));
      assert.deepEqual(await store.list("a/"), [
        { key: "a/1", size: 3 },
        { key: "a/10", size: 4 },
        { key: "a/2/x", size: 5 },
      ]);
      assert.deepEqual(await keys("a"), ["a/1", "a/10", "a/2/x", "ab"]);
      assert.deepEqual(await keys("a/1"), ["a/1", "a/10"]);
      assert.deepEqual(await keys(""), ["a/1", "a/10", "a/2/x", "ab", "b/1"]);
      assert.deepEqual(await keys("c/"), []);
    });

    it("deletes one key, a prefix, and ignores absent keys", async () => {
      for (const key of ["a/1", "a/2/x", "ab", "b/1"]) await store.put(key, Buffer.from(key));
      await store.delete("b/1");
      assert.equal(await store.stat("b/1"), null);
      await store.delete("a/");
      assert.deepEqual(await keys(""), ["ab"]);
      await store.delete("b/1");
      await store.delete("never/");
      // A prefix ending in `/` does not match an object with the prefix's name.
      await store.delete("ab/");
      assert.deepEqual(await keys(""), ["ab"]);
    });

    it("rejects unsafe keys with 400 unsafe_blob_key and writes nothing", async () => {
      const unsafe = isHangarError(400, "unsafe_blob_key");
      for (const key of UNSAFE_KEYS) {
        await assert.rejects(store.put(key, Buffer.from("x")), unsafe, `put ${JSON.stringify(key)}`);
        await assert.rejects(store.get(key), unsafe, `get ${JSON.stringify(key)}`);
        await assert.rejects(store.stat(key), unsafe, `stat ${JSON.stringify(key)}`);
        await assert.rejects(store.delete(key), unsafe, `delete ${JSON.stringify(key)}`);
        await assert.rejects(store.signedUrl(key, "PUT", 60), unsafe, `signedUrl ${JSON.stringify(key)}`);
      }
      await assert.rejects(store.list("../"), unsafe);
      await assert.rejects(store.delete("../"), unsafe);
      assert.deepEqual(await keys(""), []);
    });

    it("leaves no object, and keeps the previous one, when the body stream fails midway", async () => {
      await store.put("k/kept", Buffer.from("previous"));
      await assert.rejects(store.put("k/kept", Readable.from(failingAfterOneChunk())), /client went away/);
      await assert.rejects(store.put("k/new", Readable.from(failingAfterOneChunk())), /client went away/);
      assert.equal((await read("k/kept")).toString(), "previous");
      assert.equal(await store.stat("k/new"), null);
      assert.deepEqual(await keys(""), ["k/kept"]);
    });

    it("serves a signed GET URL", async () => {
      const body = randomBytes(10_000);
      await store.put("runs/run_1/output.ipynb", body);
      const response = await harness.fetchSigned(await store.signedUrl("runs/run_1/output.ipynb", "GET", 60));
      assert.equal(response.status, 200);
      assert.deepEqual(Buffer.from(await response.arrayBuffer()), body);
    });

    it("serves a key that needs percent-encoding", async () => {
      const key = "datasets/ds_1/my data/ä+b%20?#.csv";
      await store.put(key, Buffer.from("x,y"));
      const response = await harness.fetchSigned(await store.signedUrl(key, "GET", 60));
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "x,y");
    });

    it("accepts an upload to a signed PUT URL", async () => {
      const body = randomBytes(5_000);
      const url = await store.signedUrl("datasets/ds_1/upload.bin", "PUT", 60);
      const headers = { ...store.capabilities.signedPutHeaders };
      const response = await harness.fetchSigned(url, { method: "PUT", body, headers });
      await response.arrayBuffer();
      assert.ok(response.ok, `status ${response.status}`);
      assert.deepEqual(await read("datasets/ds_1/upload.bin"), body);
    });

    it("refuses a signed URL used with another method (403)", async () => {
      await store.put("k/object", Buffer.from("original"));
      const getUrl = await store.signedUrl("k/object", "GET", 60);
      const headers = { ...store.capabilities.signedPutHeaders };
      assert.equal(
        await statusOf(harness.fetchSigned(getUrl, { method: "PUT", body: "overwritten", headers })),
        403,
      );
      assert.equal((await read("k/object")).toString(), "original");
      const putUrl = await store.signedUrl("k/object", "PUT", 60);
      assert.equal(await statusOf(harness.fetchSigned(putUrl)), 403);
    });

    it("refuses an altered signature (403)", async () => {
      await store.put("k/object", Buffer.from("secret"));
      const url = new URL(await store.signedUrl("k/object", "GET", 60));
      const [param, ...others] = [...url.searchParams.keys()].filter((k) => /(^|-)sig(nature)?$/i.test(k));
      assert.ok(param !== undefined && others.length === 0, `one signature parameter in ${url.search}`);
      const sig = url.searchParams.get(param)!;
      url.searchParams.set(param, `${sig.startsWith("a") ? "b" : "a"}${sig.slice(1)}`);
      assert.equal(await statusOf(harness.fetchSigned(url.toString())), 403);
    });

    it("refuses a signed URL moved to another key (403)", async () => {
      await store.put("k/alpha.bin", Buffer.from("alpha"));
      await store.put("k/bravo.bin", Buffer.from("bravo"));
      const url = new URL(await store.signedUrl("k/alpha.bin", "GET", 60));
      assert.ok(url.pathname.endsWith("/alpha.bin"), url.pathname);
      url.pathname = url.pathname.replace(/alpha\.bin$/, "bravo.bin");
      assert.equal(await statusOf(harness.fetchSigned(url.toString())), 403);
    });

    it("keeps stores that share a bucket apart by key prefix", async (t) => {
      if (!harness.storeWithPrefix) return t.skip("this store takes no key prefix");
      const alpha = await harness.storeWithPrefix("alpha/");
      const bravo = await harness.storeWithPrefix("bravo/");
      await alpha.put("runs/run_1/out.txt", Buffer.from("alpha"));
      await bravo.put("runs/run_1/out.txt", Buffer.from("bravo"));
      assert.deepEqual(await alpha.list(""), [{ key: "runs/run_1/out.txt", size: 5 }]);
      await bravo.delete("runs/");
      assert.equal(await bravo.stat("runs/run_1/out.txt"), null);
      assert.deepEqual(await alpha.stat("runs/run_1/out.txt"), { key: "runs/run_1/out.txt", size: 5 });
      assert.deepEqual(await keys(""), [], "neither prefix is under the harness store's own");
    });

    it("rejects signed-URL lifetimes that are not positive whole seconds (400 invalid_expiry)", async () => {
      for (const seconds of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await assert.rejects(store.signedUrl("k", "GET", seconds), isHangarError(400, "invalid_expiry"));
      }
    });

    it("refuses an expired signed URL (403)", { timeout: 5_000 }, async () => {
      await store.put("k/object", Buffer.from("x"));
      const url = await store.signedUrl("k/object", "GET", 1);
      // Expiry has whole-second resolution: a 1 s URL is dead at most 1 s after signing.
      await sleep(1_100);
      assert.equal(await statusOf(harness.fetchSigned(url)), 403);
    });
  });
}

/** A body that sends some bytes and then breaks, like a client that disconnects mid-upload. */
async function* failingAfterOneChunk() {
  yield randomBytes(64 * 1024);
  throw new Error("client went away");
}

/** The status, after draining the body so the connection is released. */
async function statusOf(pending: Promise<Response>): Promise<number> {
  const response = await pending;
  await response.arrayBuffer();
  return response.status;
}

function isHangarError(status: number, code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof HangarError, `expected HangarError, got ${String(err)}`);
    assert.equal(err.status, status, err.message);
    assert.equal(err.code, code, err.message);
    return true;
  };
}
