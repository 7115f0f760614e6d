/** Sending as `send` and `chat` do: one path for encrypted, plain, 1:1 and group messages, and the checks before it. */
import { ServerError, type Sent, type SwitchboardClient } from "../client/client.ts";
import type { SecureClient } from "../client/secure.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { isGroupId } from "../protocol/stanzas.ts";

/**
 * Refuses, before anything is typed or sent, what the server would refuse anyway (`no_devices`), so a chat says
 * so when it opens rather than at the first message; and one's own account without another device.
 */
export async function checkRecipient(c: SwitchboardClient, to: string): Promise<void> {
  if (isGroupId(to)) return;
  const devices = await c.devices(to);
  if (to === c.account) {
    if (devices.every((d) => d === c.device)) throw new Error(`${to} has no other device to send to (a message to your own account goes to its other devices)`);
    return;
  }
  if (devices.length === 0) throw new ServerError(ErrorCode.NO_DEVICES, `${to} has no devices yet`);
}

/** Sends one message: through `secure` (end-to-end encrypted) when given, else as it is. */
export function sendText(c: SwitchboardClient, secure: SecureClient | null, to: string, text: string): Promise<Sent> {
  if (secure) return secure.send(to, text);
  return isGroupId(to) ? c.sendGroup(to, text) : c.send(to, text);
}
