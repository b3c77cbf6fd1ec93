import { badRequest } from "./errors.ts";
import type { JsonObject, JsonValue } from "./json.ts";

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Python's reserved words cannot be assigned to, so they cannot name a parameter.
const PYTHON_KEYWORDS = new Set(
  "False None True and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield".split(
    " ",
  ),
);

/** `-p key=value`: the value is JSON when it parses as JSON, otherwise the literal string. */
export function parseParameterAssignment(assignment: string): [string, JsonValue] {
  const eq = assignment.indexOf("=");
  if (eq <= 0) throw badRequest("invalid_parameter", `Parameter "${assignment}" must look like name=value`);
  const name = assignment.slice(0, eq);
  const raw = assignment.slice(eq + 1);
  assertParameterName(name);
  try {
    return [name, JSON.parse(raw) as JsonValue];
  } catch {
    return [name, raw];
  }
}

export function assertParameterName(name: string): void {
  if (!IDENTIFIER.test(name) || PYTHON_KEYWORDS.has(name)) {
    throw badRequest("invalid_parameter", `Parameter name "${name}" is not a valid Python identifier`, {
      name,
    });
  }
}

/** Parameters become Python assignments in the notebook, so names must be identifiers. */
export function validateParameters(parameters: JsonObject): JsonObject {
  for (const name of Object.keys(parameters)) assertParameterName(name);
  return parameters;
}
