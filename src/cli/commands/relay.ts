/** `switchboard relay`: the TURN relay for calls' media, a process of its own. */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";

export default defineCommand({
  name: "relay",
  section: "server",
  synopsis: "relay [--config FILE] [--relay-port N ...]",
  summary: "run a TURN relay for calls (UDP 3478; credentials from calls.secret)",
  usage: "switchboard relay [--config FILE] [--SETTING VALUE ...]   (relay.* and calls.secret: switchboard config)",
  flags: CONFIG_FLAGS,
  notes: "The subset of TURN (RFC 8656) WebRTC uses, with the TURN REST credentials the server issues (docs/CALLS.md). HTTP on relay.http_port: /load, /metrics, POST /revoke.",
  async run({ flags }) {
    const { relay } = await import("../relay.ts");
    await relay(flags);
    return -1; // keeps running
  },
});
