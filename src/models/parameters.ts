import { badRequest } from "../domain/errors.ts";
import type { JsonObject, JsonValue } from "../domain/json.ts";
import type { ModelSpec, ParameterSpec } from "./model.ts";

/** Checks one value against its declaration; a sentence naming what is wrong, or null. */
function problemWith(value: JsonValue, spec: ParameterSpec): string | null {
  switch (spec.type) {
    case "boolean":
      return typeof value === "boolean" ? null : "must be true or false";
    case "string":
      if (typeof value !== "string") return "must be a string";
      return spec.enum && !spec.enum.includes(value) ? `must be one of ${spec.enum.join(", ")}` : null;
    case "integer":
    case "number": {
      if (typeof value !== "number" || !Number.isFinite(value)) return "must be a number";
      if (spec.type === "integer" && !Number.isInteger(value)) return "must be a whole number";
      if (spec.minimum !== undefined && value < spec.minimum) return `must be at least ${spec.minimum}`;
      if (spec.maximum !== undefined && value > spec.maximum) return `must be at most ${spec.maximum}`;
      return null;
    }
  }
}

/**
 * The parameters a model runs with: the given ones checked against the model's declarations, the
 * rest from their defaults. Unknown names and bad values are a 400 naming the parameter; `extra`
 * names parameters the control plane itself consumes (e.g. `box_ligand`), which are passed through.
 */
export function resolveParameters(
  spec: ModelSpec,
  given: JsonObject,
  extra: readonly string[] = [],
): JsonObject {
  const resolved: JsonObject = {};
  for (const [name, value] of Object.entries(given)) {
    if (extra.includes(name)) continue;
    const declared = spec.parameters[name];
    if (!declared) {
      throw badRequest(
        "invalid_parameter",
        `Model ${spec.name} has no parameter "${name}"; it takes ${Object.keys(spec.parameters).join(", ")}`,
        { parameter: name, known: Object.keys(spec.parameters) },
      );
    }
    const problem = problemWith(value, declared);
    if (problem) {
      throw badRequest("invalid_parameter", `Parameter "${name}" of model ${spec.name} ${problem}`, {
        parameter: name,
      });
    }
    resolved[name] = value;
  }
  for (const [name, declared] of Object.entries(spec.parameters)) {
    if (!(name in resolved) && declared.default !== undefined) resolved[name] = declared.default;
  }
  return resolved;
}
