/**
 * The safety number of a 1:1 chat, for SecureClient.safetyNumber (secure.ts): the identities of every current
 * device with keys of both accounts, from the sessions (set up first by `ensure`).
 */
import type { SwitchboardClient } from "./client.ts";
import { safetyNumber, type E2EDevice, type PublicIdentity } from "./crypto/index.ts";

export async function safetyNumberWith(c: SwitchboardClient, e2e: E2EDevice, ensure: (account: string) => Promise<void>, account: string): Promise<string> {
  await ensure(account);
  if (account !== c.account) await ensure(c.account);
  const identities = async (a: string): Promise<PublicIdentity[]> => {
    const out: PublicIdentity[] = [];
    for (const d of await c.devices(a)) {
      if (a === c.account && d === c.device) out.push(e2e.publicIdentity);
      else {
        const k = e2e.knownIdentity({ u: a, d });
        if (k && c.keyVersion(a, d) === k.kv) out.push({ ik: k.ik, dh: k.dh });
      }
    }
    return out;
  };
  return safetyNumber(e2e.cx, { account: c.account, devices: await identities(c.account) }, { account, devices: await identities(account) });
}
