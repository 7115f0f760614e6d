/** `switchboard trace [ACCOUNT] CID`: a recent message's delivery trace, from the running server (src/ops/trace-cli.ts). */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { traceCommand } from "../../ops/trace-cli.ts";

export default defineCommand({
  name: "trace",
  section: "server",
  synopsis: "trace [ACCOUNT] CID [--config FILE] [--http-port N] [--json]",
  summary: `the delivery trace of a recent message (client id CID, sent by ACCOUNT):
accepted, durable, pushed and acked per device, read; from the running server`,
  usage: "switchboard trace [ACCOUNT] CID [--config FILE] [--http-port N] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [1, 2],
  run: ({ flags, rest, json }) => traceCommand(flags, rest, json),
});
