import { type LaunchAttempt, type MachineRecord, machineHistory } from "../domain/machines.ts";
import type { AppContext } from "./context.ts";

/** How far back the machine history looks. */
export const HISTORY_DAYS = 30;

/** An org's launches of the last HISTORY_DAYS days, per machine and one by one (newest first). */
export async function launchHistory(
  ctx: AppContext,
  orgId: string,
  provider: string | undefined,
): Promise<{ machines: MachineRecord[]; attempts: LaunchAttempt[] }> {
  const now = ctx.now();
  const attempts = await ctx.store.listLaunchAttempts(orgId, now - HISTORY_DAYS * 86_400_000, provider);
  return { machines: machineHistory(attempts, ctx.config.machinePolicy, now), attempts };
}
