import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ServerProcess, spawnServer, stopServer, TEST_API_KEY } from "../helpers/server.ts";
import type { DialectUnderTest } from "../helpers/stores.ts";

/**
 * A stand-in for `boltz` (Boltz-2 cannot run here) for the chaos tests: it writes Boltz's documented
 * output layout for every input of `boltz predict <inputs> --out_dir <out>`, taking 30 ms each, and
 * appends each input's SMILES to `<dir>/completed.log`, so repeated executions can be counted.
 */
const standIn = (log: string) => `#!/usr/bin/env python3
# Test-only stand-in for "boltz predict <inputs> --out_dir <out> ...": Boltz's output layout, 30 ms per input.
import json, os, re, sys, time
inputs, out = sys.argv[2], sys.argv[sys.argv.index("--out_dir") + 1]
for name in sorted(os.listdir(inputs)):
    if not name.endswith(".yaml"):
        continue
    time.sleep(0.03)
    ident = name[:-5]
    smiles = re.search(r"smiles: '(.*)'", open(os.path.join(inputs, name)).read()).group(1)
    where = os.path.join(out, "boltz_results_" + os.path.basename(inputs.rstrip("/")), "predictions", ident)
    os.makedirs(where, exist_ok=True)
    json.dump({"confidence_score": 0.8, "iptm": 0.7, "ptm": 0.75, "ligand_iptm": 0.6, "complex_plddt": 0.85},
              open(os.path.join(where, "confidence_%s_model_0.json" % ident), "w"))
    json.dump({"affinity_pred_value": -1.0 - len(smiles) / 100, "affinity_probability_binary": 0.6},
              open(os.path.join(where, "affinity_%s.json" % ident), "w"))
    open(os.path.join(where, "%s_model_0.cif" % ident), "w").write("data_%s\\n" % ident)
    with open(${JSON.stringify(log)}, "a") as done:
        done.write(smiles + "\\n")
`;

/** Distinct valid SMILES, so each line of the stand-in's log names one child. */
export const ligands = (count: number) =>
  Array.from({ length: count }, (_, i) => ({
    name: `l${i}`,
    smiles: `${"C".repeat(1 + (i % 12))}O${"C".repeat(1 + (Math.floor(i / 12) % 12))}N${"C".repeat(1 + Math.floor(i / 144))}`,
  }));

/** Writes the stand-in as `<dir>/boltz` (for HANGAR_BOLTZ_CMD) with an empty log beside it. */
export async function installStandIn(dir: string): Promise<void> {
  await writeFile(join(dir, "boltz"), standIn(join(dir, "completed.log")));
  await chmod(join(dir, "boltz"), 0o755);
  await writeFile(join(dir, "completed.log"), "");
}

export const SEQUENCE =
  "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMSLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNIIGRNLLTQIGCTLNF";

export interface ChaosRig {
  server: ServerProcess;
  /** The stand-in's path, as it shows in its processes' command lines. */
  standIn: string;
  /** Where the stand-in logs each input it completes, one SMILES a line. */
  completedLog: string;
  /** The admin's API call: a GET, or a POST of `body`. */
  // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
  call(path: string, body?: unknown): Promise<{ status: number; json: any }>;
  close(): Promise<void>;
}

/** A real server on `dialect` running Boltz-2 through the stand-in, priced at 1 µ per ms so charges can be counted. */
export async function startChaosRig(dialect: DialectUnderTest): Promise<ChaosRig> {
  const fixture = await dialect.fixture();
  const dir = await mkdtemp(join(tmpdir(), "hangar-chaos-"));
  await installStandIn(dir);
  const server = await spawnServer({
    ...fixture.env,
    HANGAR_BOLTZ_CMD: join(dir, "boltz"),
    HANGAR_LOCAL_PRICE_PER_HOUR: "cpu:3.6",
    HANGAR_BILLING_INTERVAL_S: "1",
  });
  return {
    server,
    standIn: join(dir, "boltz"),
    completedLog: join(dir, "completed.log"),
    async call(path, body) {
      const response = await fetch(`${server.url}${path}`, {
        method: body === undefined ? "GET" : "POST",
        headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, json: await response.json() };
    },
    async close() {
      await stopServer(server);
      await fixture.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
