import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { a3mProblem } from "../../src/chem/msa.ts";

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
