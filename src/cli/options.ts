import { InvalidArgumentError } from "commander";

/** Commander option parsers and output helpers every command shares. */

export const integer = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError("not an integer");
  return n;
};

export const nonNegative = (value: string): number => {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError("not a number ≥ 0");
  return n;
};

export const collect = (value: string, previous: string[]) => [...previous, value];

export const print = (value: unknown): void =>
  void process.stdout.write(`${typeof value === "string" ? value : JSON.stringify(value, null, 2)}\n`);

/** `--wait` exit codes for runs, predictions and batches alike: 0 succeeded, 3 cancelled, 1 otherwise. */
export const exitCodeOf = (status: string) => (status === "succeeded" ? 0 : status === "cancelled" ? 3 : 1);
