import type { RunView } from "./client.ts";

const WIDTH = 24;

/** One line describing a run while it waits: a bar of cells done, elapsed time and state. */
export function progressLine(run: RunView, elapsedMs: number): string {
  const done = run.progress?.done ?? 0;
  const total = run.progress?.total ?? 0;
  const filled = total > 0 ? Math.round((done / total) * WIDTH) : 0;
  const bar = `[${"#".repeat(filled)}${".".repeat(WIDTH - filled)}]`;
  const cells = total > 0 ? `${done}/${total} cells` : "–/– cells";
  const attempt = run.attempts > 1 ? ` attempt ${run.attempts}/${run.max_attempts}` : "";
  const phase = run.status === "running" && run.progress ? run.progress.phase : run.status;
  return `${bar} ${cells}  ${(elapsedMs / 1000).toFixed(1)}s  ${phase}${attempt}`;
}

/** Redraws in place on a terminal; prints only changes otherwise (CI logs stay readable). */
export class ProgressDisplay {
  readonly #stream: NodeJS.WriteStream;
  #last = "";

  constructor(stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream;
  }

  update(run: RunView, elapsedMs: number): void {
    const line = progressLine(run, elapsedMs);
    if (this.#stream.isTTY) {
      this.#stream.write(`\r\x1b[2K${line}`);
    } else {
      const key = line.replace(/\s+\d+\.\ds\s+/, " ");
      if (key !== this.#last) this.#stream.write(`${line}\n`);
      this.#last = key;
    }
  }

  done(): void {
    if (this.#stream.isTTY) this.#stream.write("\n");
  }
}
