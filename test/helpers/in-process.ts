/**
 * Enrolling a device on a SwitchboardServer running in the test's own process (tests that act between a server's
 * steps or count what its process does): the account made through the server's store, the device enrolled over TCP.
 */
import type { SwitchboardServer } from "../../src/core/server.ts";
import { enrollDevice } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";

export async function enrollIn(server: SwitchboardServer, tcpPort: number, account: string): Promise<KeyFile> {
  const r = server.accounts.createAccount(account, 3600);
  if (!r.ok) throw new Error(r.message);
  const key = generateDeviceKey();
  const e = await enrollDevice({ host: "127.0.0.1", port: tcpPort, account, code: r.value.code, key });
  return keyToFile(key, e.account, e.device);
}
