/**
 * What a cloud instance runs at boot: fetch the agent bundle from the control plane (`HANGAR_URL`,
 * in the instance's environment) and run it with the image's Node.js. The agent does the rest: it
 * registers with its one-time token and calls in for work, so no port needs to be open. The fetch
 * is retried every 5 s for up to 15 minutes (the agent's own reconnect window), so an instance that
 * boots while the control plane restarts still joins it.
 */
export const AGENT_BOOTSTRAP_COMMAND = [
  'dir="$(mktemp -d)"',
  "tries=0",
  'until curl -fsS -o "$dir/agent.mjs" "$HANGAR_URL/agent.mjs" 2>/dev/null || wget -q -O "$dir/agent.mjs" "$HANGAR_URL/agent.mjs"; do ' +
    'tries=$((tries + 1)); if [ "$tries" -ge 180 ]; then echo "hangar: $HANGAR_URL/agent.mjs unreachable" >&2; exit 1; fi; sleep 5; done',
  'exec node "$dir/agent.mjs"',
].join("; ");
