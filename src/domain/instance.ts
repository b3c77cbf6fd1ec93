export const INSTANCE_STATES = ["provisioning", "ready", "busy", "idle", "terminated"] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

const ALLOWED: Record<InstanceState, readonly InstanceState[]> = {
  provisioning: ["ready", "terminated"],
  ready: ["busy", "idle", "terminated"],
  busy: ["idle", "terminated"],
  idle: ["busy", "terminated"],
  terminated: [],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return ALLOWED[from].includes(to);
}

/** Of the states a caller expects an instance in, those from which the lifecycle allows `to`. */
export function sourcesFor(to: InstanceState, expected: readonly InstanceState[]): InstanceState[] {
  return expected.filter((from) => canTransition(from, to));
}

/** States in which an instance counts against the provider's capacity. */
export const LIVE_STATES: readonly InstanceState[] = ["provisioning", "ready", "busy", "idle"];

export interface GpuAssignment {
  index: number;
  name: string;
  memoryMiB: number;
}

export interface Instance {
  id: string;
  orgId: string;
  provider: string;
  providerInstanceId: string | null;
  state: InstanceState;
  gpus: GpuAssignment[];
  createdAt: number;
  readyAt: number | null;
  stateChangedAt: number;
  lastSeenAt: number | null;
  terminatedAt: number | null;
  terminationReason: string | null;
  bootstrapTokenHash: string | null;
  agentTokenHash: string | null;
  /** What the provider reports this instance costs per hour; null until it answered the launch. */
  pricePerHour: number | null;
  /** The host it landed on; null until the provider answered the launch. */
  machineId: string | null;
}
