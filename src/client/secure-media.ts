/**
 * How many devices an attachment's message goes to, for `media.upload {n}` under the server's
 * `media.delete_after_download` (its hello's `dd`, docs/PROTOCOL.md §6.12): the server deletes the blob after
 * that many whole downloads, so the count must not be lower than the devices that may download it.
 */
import { isGroupId } from "../protocol/stanzas.ts";
import type { SwitchboardClient } from "./client.ts";

/**
 * The devices SecureClient's message to `to` is encrypted for: 1:1, every device of `to` and our own other
 * devices (they get the copy the server fans out, and may download it as well); a group, every member's
 * devices and our own other ones. Devices without published keys (kv 0) get a notice instead, never the key,
 * so they are not counted. `ensureSessions` first: it refreshes the device lists and key versions the count reads.
 */
export async function recipientDevices(c: SwitchboardClient, to: string, ensureSessions: (account: string) => Promise<void>): Promise<number> {
  const accounts = new Set([c.account, ...(isGroupId(to) ? (await c.groupInfo(to)).members.map((m) => m.u) : [to])]);
  await Promise.all([...accounts].map(ensureSessions));
  let n = 0;
  for (const a of accounts) for (const d of await c.devices(a)) if (!(a === c.account && d === c.device) && c.keyVersion(a, d) !== 0) n++;
  return n;
}
