/**
 * The key directory across nodes: 3 real `switchboard serve` processes and a private redis-server. An account's
 * bundles and one-time prekeys live only on its home, so `keys.fetch` of a remote account goes there over the node
 * link and its answer comes back (node.ts HOME_OPS). Proves:
 * - a SecureClient on n1 starts a session with, and sends an encrypted message to, an account homed on n2 it has
 *   never talked to; the recipient decrypts it and answers, and the answer decrypts on n1; the server saw only
 *   ciphertext;
 * - the answer is the home's: an account there without keys lists its device as missing, an unknown one is
 *   `unknown_user`;
 * - while the home has no live owner (kill -9), a fetch gets `retry_after`, and after the restart it is answered.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { accountOn, allHeld, homeOf, threeNodes } from "./three-nodes.ts";
import { ServerError, SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient, type SecureMessage } from "../../src/client/secure.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import { waitFor } from "../helpers/harness.ts";

const TTL = 4000;
const { nodes, clients, device, args } = threeNodes(TTL);
let dir: string;
beforeAll(() => void (dir = mkdtempSync(join(tmpdir(), "sb-cluster-keys-"))));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Dev {
  c: SwitchboardClient;
  s: SecureClient;
  got: SecureMessage[];
  raw: Uint8Array[];
  errors: Error[];
}

/** A device with end-to-end encryption, connected to its home, its keys published. */
async function secure(kf: KeyFile): Promise<Dev> {
  const d = { got: [], raw: [], errors: [] } as unknown as Dev;
  d.c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(homeOf(kf.account))!.tcp, key: kf });
  clients.push(d.c);
  d.c.on("message", (m) => d.raw.push(m.payload));
  d.s = await SecureClient.open(d.c, { statePath: join(dir, `${kf.account}-${kf.device}.e2e`), otkTarget: 10 });
  d.s.on("message", (m) => d.got.push(m));
  d.s.on("error", (e) => d.errors.push(e));
  await d.c.connect();
  await d.s.whenPublished();
  return d;
}

const contains = (hay: Uint8Array, needle: string) => Buffer.from(hay).includes(Buffer.from(needle));

describe("keys.fetch across nodes", () => {
  test("a SecureClient on n1 sends an encrypted message to an account homed on n2 it never talked to, and gets the answer", async () => {
    const [a, b] = [accountOn("n1", "ka"), accountOn("n2", "kb")];
    const [alice, bob] = [await secure(await device(a)), await secure(await device(b))];
    expect((await bob.c.request<{ n: number }>("keys.count")).n).toBe(10);
    // Nothing of b is cached on n1: its devices, then its bundles, come from n2.
    const sent = await alice.s.send(b, "hello across nodes");
    expect(sent.seq).toBeGreaterThan(0);
    await waitFor(() => bob.got.length >= 1, "bob to decrypt alice's message", 30_000);
    expect(bob.got.map((m) => [m.from, m.text])).toEqual([[a, "hello across nodes"]]);
    expect(contains(bob.raw[0]!, "hello across nodes")).toBe(false); // what the servers carried was ciphertext
    expect(bob.errors).toEqual([]);
    // The answer goes the other way (n2 fetches a's bundles from n1 only if it needs them: the session already exists).
    await bob.s.send(a, "and back");
    await waitFor(() => alice.got.length >= 1, "alice to decrypt bob's answer", 30_000);
    expect(alice.got.map((m) => [m.from, m.text])).toEqual([[b, "and back"]]);
    expect(alice.errors).toEqual([]);
  }, 120_000);

  test("a fetch is answered by the home: an account there with no keys lists its device missing; one it does not know is unknown_user", async () => {
    const a = accountOn("n1", "ku");
    const alice = await secure(await device(a));
    // A device enrolled on n3 that never published keys: only n3 knows it (n1 alone would answer unknown_user).
    const quiet = await device(accountOn("n3", "kquiet"));
    const r = await alice.c.request<{ u: string; bundles: unknown[]; missing: number[] }>("keys.fetch", { u: quiet.account });
    expect(r).toEqual({ u: quiet.account, bundles: [], missing: [quiet.device] });
    const ghost = accountOn("n3", "kghost");
    const e = await alice.c.request("keys.fetch", { u: ghost }).catch((x) => x);
    expect(e).toBeInstanceOf(ServerError);
    expect((e as ServerError).code).toBe(ErrorCode.UNKNOWN_USER);
    expect((e as ServerError).message).toContain(ghost);
  }, 60_000);

  test("kill -9 of the home: a fetch gets retry_after while it has no live owner, and is answered after its restart", async () => {
    const [a, c] = [accountOn("n1", "kr"), accountOn("n3", "kc")];
    const alice = await secure(await device(a));
    await secure(await device(c));
    const n3 = nodes.get("n3")!;
    await n3.kill9();
    // Until n1 sees n3's leases lapse it still forwards (the item waits in the link); then it refuses.
    let refused: ServerError | null = null;
    await waitFor(async () => {
      const r = await Promise.race([
        alice.c.request("keys.fetch", { u: c }).then(() => null, (x) => x as ServerError),
        Bun.sleep(2_000).then(() => null),
      ]);
      if (r?.code === ErrorCode.RETRY_AFTER) refused = r;
      return refused !== null;
    }, "a keys.fetch refused with retry_after while n3 is down", 60_000);
    expect(typeof (refused!.detail as { retry_ms?: unknown } | undefined)?.retry_ms).toBe("number");
    await n3.restart(args("n3"));
    await allHeld(nodes);
    const r = await alice.c.request<{ u: string; bundles: { d: number }[] }>("keys.fetch", { u: c });
    expect(r.u).toBe(c);
    expect(r.bundles.length).toBe(1);
  }, 120_000);
});
