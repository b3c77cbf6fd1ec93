export { detectLocalGpus } from "./gpu-detect.ts";
export { LocalProvider, type LocalProviderOptions } from "./local-provider.ts";
