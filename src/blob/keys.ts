import { badRequest } from "../domain/errors.ts";

export const MAX_SEGMENT_BYTES = 255;
export const MAX_PATH_BYTES = 1024;

const CONTROL_CHAR = /\p{Cc}/u;
const DRIVE_LETTER = /^[A-Za-z]:/;

/** What is wrong with `path` as a `/`-separated relative path, in words; undefined when it is safe. */
function findProblem(path: string): string | undefined {
  if (path === "") return "it is empty";
  // Lone surrogates would be silently replaced by U+FFFD on disk, so the stored name would differ.
  if (!path.isWellFormed()) return "it contains an unpaired UTF-16 surrogate (not valid Unicode)";
  const control = CONTROL_CHAR.exec(path);
  if (control) {
    const code = control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    return `it contains the control character U+${code}`;
  }
  if (path.includes("\\")) return 'it contains a backslash; separate folders with "/"';
  if (path.startsWith("/")) return 'it starts with "/"; it must be a relative path';
  if (DRIVE_LETTER.test(path))
    return `it starts with a drive letter ("${path.slice(0, 2)}"); it must be a relative path`;
  const bytes = Buffer.byteLength(path, "utf8");
  if (bytes > MAX_PATH_BYTES) return `it is ${bytes} bytes long; at most ${MAX_PATH_BYTES} bytes are allowed`;
  const segments = path.split("/");
  for (const [index, segment] of segments.entries()) {
    const position = `segment ${index + 1} of ${segments.length}`;
    if (segment === "") return `${position} is empty (a doubled, leading or trailing "/")`;
    if (segment === "." || segment === "..") return `${position} is "${segment}", which is not allowed`;
    const segmentBytes = Buffer.byteLength(segment, "utf8");
    if (segmentBytes > MAX_SEGMENT_BYTES) {
      return `${position} is ${segmentBytes} bytes long; at most ${MAX_SEGMENT_BYTES} bytes are allowed`;
    }
  }
  return undefined;
}

/**
 * Validates a user-supplied file name or relative path such as `data/a.csv` (e.g. a multipart
 * upload's filename). Unsafe names are rejected with 400 `unsafe_file_name` rather than silently
 * renamed, so the user sees exactly which name was refused and why. Returns the name in Unicode NFC
 * so that the same name typed on macOS (NFD) and Linux (NFC) maps to one stored file.
 */
export function assertSafeRelativePath(name: string | undefined): string {
  // A multipart part sent with `filename=""` reaches here without a name at all.
  if (name === undefined) {
    throw badRequest("unsafe_file_name", "A file was sent with an empty file name.", { name: null });
  }
  const normalised = name.normalize("NFC");
  const problem = findProblem(normalised);
  if (problem !== undefined) {
    throw badRequest("unsafe_file_name", `File name ${JSON.stringify(name)} is not allowed: ${problem}.`, {
      name,
    });
  }
  return normalised;
}

/**
 * Validates an internal storage key with the same rules as file names; keys are returned unchanged
 * (they are built by the server from already-normalised parts) so `put` and `list` agree on them.
 */
export function assertSafeKey(key: string): string {
  const problem = findProblem(key);
  if (problem !== undefined) {
    throw badRequest("unsafe_blob_key", `Blob key ${JSON.stringify(key)} is not allowed: ${problem}.`, {
      key,
    });
  }
  return key;
}

/** Joins key parts (each may itself hold `/`) with `/` and validates the result as a whole. */
export function joinKey(...parts: string[]): string {
  return assertSafeKey(parts.join("/"));
}

/**
 * Validates a listing or deletion prefix: empty (everything), or a key with or without a trailing
 * `/`. Object stores would accept `../` as a plain string; it is refused here as a key would be.
 */
export function assertSafePrefix(prefix: string): string {
  if (prefix !== "") assertSafeKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
  return prefix;
}
