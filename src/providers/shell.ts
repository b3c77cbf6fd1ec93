/** One POSIX shell word: the text single-quoted, with its own single quotes closed, escaped and reopened. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}
