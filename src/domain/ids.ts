import { v7 as uuidv7 } from "uuid";

export type IdPrefix =
  | "nb"
  | "ds"
  | "run"
  | "job"
  | "batch"
  | "inst"
  | "key"
  | "org"
  | "user"
  | "inv"
  | "rt"
  | "budget";

/** Time-ordered ids (UUIDv7) so that sorting by id is sorting by creation. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${uuidv7().replaceAll("-", "")}`;
}
