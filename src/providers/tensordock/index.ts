import { TENSORDOCK_API_URL, TensorDockClient } from "./tensordock-client.ts";
import { TensorDockProvider, type TensorDockProviderOptions } from "./tensordock-provider.ts";

export { TensorDockClient, TensorDockProvider, type TensorDockProviderOptions };

/** TensorDock when TENSORDOCK_API_TOKEN is set; TENSORDOCK_API_URL points it elsewhere. */
export function tensordockFromEnv(
  env: NodeJS.ProcessEnv,
  options: TensorDockProviderOptions = {},
): TensorDockProvider | null {
  if (!env.TENSORDOCK_API_TOKEN) return null;
  return new TensorDockProvider(
    new TensorDockClient({
      token: env.TENSORDOCK_API_TOKEN,
      apiUrl: env.TENSORDOCK_API_URL || TENSORDOCK_API_URL,
    }),
    options,
  );
}
