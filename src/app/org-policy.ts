import type { AppContext } from "./context.ts";

/** The priority an org's work gets when its request names none. */
export async function defaultPriority(ctx: AppContext, orgId: string): Promise<number> {
  return (await ctx.store.accounts.getOrg(orgId))?.defaultPriority ?? 0;
}
