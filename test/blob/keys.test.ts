import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertSafeKey, assertSafeRelativePath, joinKey } from "../../src/blob/keys.ts";
import { HangarError } from "../../src/domain/errors.ts";

/** Asserts `fn` throws 400 `code` whose message names `name` and contains `why`. */
function assertRejected(fn: () => unknown, code: string, name: string, why: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HangarError);
    assert.equal(err.status, 400);
    assert.equal(err.code, code);
    assert.ok(err.message.includes(JSON.stringify(name)), err.message);
    assert.match(err.message, why);
    return true;
  });
}

const UNSAFE: [string, RegExp][] = [
  ["", /empty/],
  ["../x", /segment 1 of 2 is "\.\."/],
  ["a/../../b", /segment 2 of 4 is "\.\."/],
  ["./a", /segment 1 of 2 is "\."/],
  ["a/.", /segment 2 of 2 is "\."/],
  ["/abs", /starts with "\/"/],
  ["a//b", /segment 2 of 3 is empty/],
  ["a/", /segment 2 of 2 is empty/],
  ["C:/x", /drive letter \("C:"\)/],
  ["c:x", /drive letter/],
  ["a\\b", /backslash/],
  ["..\\x", /backslash/],
  ["a\0b", /U\+0000/],
  ["a\nb", /U\+000A/],
  ["a\u007fb", /U\+007F/],
  ["a\u0085b", /U\+0085/],
  ["a\ud800b", /unpaired UTF-16 surrogate/],
  ["x".repeat(256), /segment 1 of 1 is 256 bytes long; at most 255/],
  ["é".repeat(128), /256 bytes long/],
  [Array.from({ length: 5 }, () => "x".repeat(205)).join("/"), /1029 bytes long; at most 1024/],
];

describe("assertSafeRelativePath", () => {
  it("accepts relative paths with sub-folders and returns them", () => {
    for (const name of [
      "a.csv",
      "data/a.csv",
      "deep/er/still/x.parquet",
      ".hidden",
      "a..b",
      "...",
      "x".repeat(255),
    ]) {
      assert.equal(assertSafeRelativePath(name), name);
    }
    const longest = Array.from({ length: 4 }, () => "x".repeat(255)).join("/");
    assert.equal(Buffer.byteLength(longest), 1023);
    assert.equal(assertSafeRelativePath(longest), longest);
  });

  it("normalises to Unicode NFC", () => {
    assert.equal(assertSafeRelativePath("cafe\u0301/x.csv"), "caf\u00e9/x.csv");
  });

  for (const [name, why] of UNSAFE) {
    it(`rejects ${JSON.stringify(name).slice(0, 40)} with unsafe_file_name`, () => {
      assertRejected(() => assertSafeRelativePath(name), "unsafe_file_name", name, why);
    });
  }

  it("puts the offending name in the details", () => {
    assert.throws(() => assertSafeRelativePath("../x"), { details: { name: "../x" } });
  });
});

describe("assertSafeKey", () => {
  it("accepts server-built keys unchanged, without normalising", () => {
    assert.equal(assertSafeKey("runs/run_1/out.ipynb"), "runs/run_1/out.ipynb");
    assert.equal(assertSafeKey("cafe\u0301"), "cafe\u0301");
  });

  it("applies the same rules, as unsafe_blob_key", () => {
    for (const [name, why] of UNSAFE) assertRejected(() => assertSafeKey(name), "unsafe_blob_key", name, why);
    assert.throws(() => assertSafeKey("../x"), { details: { key: "../x" } });
  });
});

describe("joinKey", () => {
  it("joins parts, which may hold sub-folders", () => {
    assert.equal(joinKey("datasets", "ds_1", "data/a.csv"), "datasets/ds_1/data/a.csv");
  });

  it("validates the joined key", () => {
    assertRejected(() => joinKey("datasets", "", "a"), "unsafe_blob_key", "datasets//a", /empty/);
    assertRejected(() => joinKey("datasets", "../etc"), "unsafe_blob_key", "datasets/../etc", /"\.\."/);
  });
});
