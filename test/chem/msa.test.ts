import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { a3mProblem, firstA3mRecord } from "../../src/chem/msa.ts";

describe("a3mProblem", () => {
  it("accepts an A3M whose first sequence is the protein, across lines and with gaps or insertions elsewhere", () => {
    assert.equal(a3mProblem(">101\nMQIFV\nKTLTG\n>hit 1\nMQ-FVaaKTLTG\n", "MQIFVKTLTG"), null);
    assert.equal(a3mProblem(">q\r\nMQIFVKTLTG\r\n", "MQIFVKTLTG"), null, "CRLF line ends");
  });

  it("names what is wrong: no header, no query, another protein", () => {
    assert.match(a3mProblem("MQIFV\n", "MQIFV") ?? "", /">" header/);
    assert.match(a3mProblem(">q\n>hit\nMQIFV\n", "MQIFV") ?? "", /no sequence/);
    assert.match(a3mProblem(">q\nMQIFA\n", "MQIFV") ?? "", /is not protein_sequence/);
  });
});

describe("firstA3mRecord", () => {
  it("reads the header and query and stops there, leaving the hits unread", async () => {
    let hitsPulled = 0;
    async function* alignment() {
      yield ">query\nMQIF";
      yield "VKTLTG\n>hit 1\nMQ-FV\n";
      for (let i = 0; i < 10_000; i++) {
        hitsPulled++;
        yield `>hit ${i + 2}\n${"MQIFVKTLTG".repeat(50)}\n`;
      }
    }
    const record = await firstA3mRecord(Readable.from(alignment()));
    assert.equal(record, ">query\nMQIFVKTLTG");
    // The stream reads a few chunks ahead of the reader; the rest is never pulled.
    assert.ok(hitsPulled < 100, `${hitsPulled} of 10,000 hit chunks were read`);
    assert.equal(a3mProblem(record, "MQIFVKTLTG"), null);
  });

  it("answers the whole file when it holds only the query", async () => {
    assert.equal(await firstA3mRecord(Readable.from([">q\r\nMQIFV\r\n"])), ">q\nMQIFV");
  });
});
