import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { createFsBlobStore, type FsBlobStore } from "../../src/blob/fs/index.ts";
import { UrlSigner } from "../../src/blob/url-signer.ts";
import { HangarError } from "../../src/domain/errors.ts";
import { runBlobStoreConformance } from "./conformance.ts";
import { startFsSignedServer } from "./fs-signed-server.ts";

const signer = new UrlSigner("test-secret-test-secret-test-secret!");

runBlobStoreConformance("fs", async () => {
  const root = await mkdtemp(path.join(tmpdir(), "hangar-blob-"));
  let baseUrl = "";
  const store = createFsBlobStore({ root, publicBaseUrl: () => baseUrl, signer });
  const server = await startFsSignedServer(store);
  baseUrl = server.baseUrl;
  return {
    store,
    fetchSigned: (url, init) => fetch(url, init),
    cleanup: async () => {
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

/** What only the filesystem store can show: what actually lies on disk. */
describe("FsBlobStore on disk", () => {
  let sandbox: string;
  let root: string;
  let store: FsBlobStore;

  beforeEach(async () => {
    // The root sits inside a sandbox so that an escape through `..` would be visible next to it.
    sandbox = await mkdtemp(path.join(tmpdir(), "hangar-blob-sandbox-"));
    root = path.join(sandbox, "root");
    store = createFsBlobStore({ root, publicBaseUrl: "http://api.example/v1/", signer });
  });
  afterEach(() => rm(sandbox, { recursive: true, force: true }));

  const filesUnder = async (dir: string) =>
    (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((entry) => entry.isFile())
      .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));

  it("declares that the API serves its signed URLs, which need no extra headers", () => {
    assert.deepEqual(store.capabilities, { signedUrlsServedByApi: true, signedPutHeaders: {} });
  });

  it("stores each key as a file under root", async () => {
    await store.put("datasets/ds_1/data/a.csv", Buffer.from("a,b"));
    assert.deepEqual(await filesUnder(sandbox), [path.join("root", "datasets", "ds_1", "data", "a.csv")]);
  });

  it("writes nothing outside root for unsafe keys", async () => {
    await store.put("inside", Buffer.from("x"));
    for (const key of ["../x", "/abs", "a/../../b", "../root2/x", "a\0b"]) {
      await assert.rejects(store.put(key, Buffer.from("x")), HangarError);
    }
    assert.deepEqual(await readdir(sandbox), ["root"]);
    assert.deepEqual(await filesUnder(root), ["inside"]);
  });

  it("removes the temp file when the body fails midway", async () => {
    async function* failing() {
      yield Buffer.alloc(256 * 1024);
      throw new Error("boom");
    }
    await assert.rejects(store.put("k/x", Readable.from(failing())), /boom/);
    assert.deepEqual(await filesUnder(root), []);
  });

  it("hides in-progress temp files from list and refuses keys that would collide with them", async () => {
    await store.put("k/x", Buffer.from("x"));
    await writeFile(path.join(root, "k", ".hangar-tmp-123"), "partial");
    assert.deepEqual(await store.list(""), [{ key: "k/x", size: 1 }]);
    await assert.rejects(store.put("k/.hangar-tmp-123", Buffer.from("y")), { status: 400 });
  });

  it("does not follow symlinks planted under root", async () => {
    await writeFile(path.join(sandbox, "outside.txt"), "outside");
    await mkdir(root);
    await symlink(path.join(sandbox, "outside.txt"), path.join(root, "link"));
    await symlink(sandbox, path.join(root, "dirlink"));
    await assert.rejects(store.get("link"), { status: 404, code: "blob_not_found" });
    assert.equal(await store.stat("link"), null);
    assert.deepEqual(await store.list(""), []);
  });

  it("answers 409 when a key would be both an object and a folder", async () => {
    await store.put("a", Buffer.from("file"));
    await assert.rejects(store.put("a/b", Buffer.from("x")), { status: 409, code: "blob_key_conflict" });
    await store.put("c/d", Buffer.from("x"));
    await assert.rejects(store.put("c", Buffer.from("x")), { status: 409, code: "blob_key_conflict" });
    assert.deepEqual(await filesUnder(root), ["a", path.join("c", "d")]);
  });

  it("treats a folder as no object for get, stat and delete", async () => {
    await store.put("dir/x", Buffer.from("x"));
    await assert.rejects(store.get("dir"), { status: 404, code: "blob_not_found" });
    assert.equal(await store.stat("dir"), null);
    await store.delete("dir");
    assert.deepEqual(await store.list(""), [{ key: "dir/x", size: 1 }]);
  });

  it("builds signed URLs from the public base URL, one encoded segment at a time", async () => {
    const url = new URL(await store.signedUrl("datasets/ds_1/a b/ä.csv", "GET", 60));
    assert.equal(url.origin, "http://api.example");
    assert.equal(url.pathname, "/v1/blobs/datasets/ds_1/a%20b/%C3%A4.csv");
    assert.deepEqual([...url.searchParams.keys()], ["expires", "sig"]);
    store.verifySignedRequest(
      "GET",
      "datasets/ds_1/a b/ä.csv",
      url.searchParams.get("expires") ?? undefined,
      url.searchParams.get("sig") ?? undefined,
    );
  });

  it("verifySignedRequest rejects an unsafe key before looking at the signature", () => {
    assert.throws(() => store.verifySignedRequest("GET", "../x", "1", "sig"), {
      status: 400,
      code: "unsafe_blob_key",
    });
  });
});
