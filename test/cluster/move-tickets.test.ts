/**
 * Resumption tickets across a shard move (tickets.ts, PROTOCOL.md §4.11): 3 real `switchboard serve` processes and
 * a private redis-server. A ticket's secret is made with the node key derived for the account's shard; a move ships
 * those derived keys, the issuing node's sid and the shard devices' replay record with the rows.
 * - An SDK device with a ticket of n1 whose shard moves to n2 is closed by the freeze, redirected, and resumes at n2
 *   with n1's ticket: no `auth` (without the keys in the shipment n2 refused the ticket and the device signed:
 *   checked by mutation).
 * - A proof accepted at n1 just before the move, replayed at n2 within the ±10 s window, is refused as a replay,
 *   and a fresh proof of the same ticket passes there (without the replay record in the shipment n2 took the
 *   replay: checked by mutation).
 * - An account deleted at n1 before its shard moves: the name stays reserved at n2 (`user add` refused) and its
 *   device's ticket is refused there, after a kill -9 of n2 too (without the tombstones in the shipment n2 took the
 *   ticket and gave the name away: checked by mutation).
 * - A device revoked at n1 before its shard moves: its ticket (of n1's key, which n2 now has) is refused at n2 right
 *   after the move and after a kill -9 of n2, with no accounts.db read per resume (the move reads the revokes of
 *   the accounts it brings: without it n2 took the ticket, checked by mutation).
 */
import { describe, expect, test } from "bun:test";
import { keyFromFile, signProof, type KeyFile } from "../../src/client/keys.ts";
import { resumeFrame, ticketOf } from "../../src/client/ticket.ts";
import { proofTranscript } from "../../src/protocol/auth.ts";
import type { HelloS, Ready, ServerStanza } from "../../src/protocol/stanzas.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";
import { accountOn, threeNodes } from "./three-nodes.ts";

const { nodes, device, connect: client } = threeNodes(4000);
const move = (from: TestServer, account: string, to: string) =>
  fetch(`http://127.0.0.1:${from.http}/cluster/move?shard=${shardOf(account)}&to=${to}`, { method: "POST" }).then((x) => x.json() as Promise<{ ok: boolean }>);
const sidOf = async (n: TestServer) => {
  const c = await n.raw();
  const h = await c.hello();
  c.end();
  return h.sid;
};

/** A full login of `kf` at `n` asking for a ticket: the ticket of its ready. */
const ticketAt = async (n: TestServer, kf: KeyFile) => {
  const a = await n.raw();
  a.send({ t: "hello", v: [1], tk: true });
  const h = (await a.expect("hello")) as HelloS;
  a.send({ t: "auth", u: kf.account, d: kf.device, sig: signProof(keyFromFile(kf), proofTranscript("auth", h.sid, h.nonce, kf.account, kf.device)) });
  const t = ticketOf((await a.expect("ready")) as Ready, h.sid, null)!;
  a.end();
  return t;
};

/** A fresh proof of ticket `t` at `n`, asked again while the shard is not served there yet (close try_again, err retry_after). */
const resumeAt = async (n: TestServer, t: Awaited<ReturnType<typeof ticketAt>>, account: string, d: number): Promise<ServerStanza> => {
  for (let k = 0; ; k++) {
    const c = await n.raw();
    c.send({ t: "hello", v: [1], tk: true });
    c.send((await resumeFrame(t, account, d, true))!);
    const got = await c.expect((s) => s.t === "ready" || s.t === "err" || s.t === "close", 10_000);
    c.end();
    const again = got.t === "close" || (got.t === "err" && got.e === "retry_after"); // restarted: its leases not held yet
    if (!again || k >= 40) return got;
    await Bun.sleep(250);
  }
};

describe("tickets across a shard move", () => {
  test("a device with a ticket of the old home resumes at the new home without auth", async () => {
    const r = accountOn("n1", "tm_");
    const c = await client(await device(r), "n1");
    expect(c.lastLogin?.kind).toBe("auth");
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const sid2 = await sidOf(n2);
    expect(await move(n1, r, "n2")).toMatchObject({ ok: true, shards: 1 });
    await waitFor(() => c.isReady && c.hello?.sid === sid2, "the device back, at n2", 30_000);
    expect(c.lastLogin?.kind).toBe("resume");
  }, 60_000);

  test("a proof taken at the old home is refused at the new one as a replay; a fresh one passes", async () => {
    const r = accountOn("n1", "tr_");
    const kf = await device(r);
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const t = await ticketAt(n1, kf);
    const resume = async (n: TestServer, frame: object): Promise<ServerStanza> => {
      const c = await n.raw();
      c.send({ t: "hello", v: [1], tk: true });
      c.send(frame);
      const got = await c.expect((s) => s.t === "ready" || (s.t === "err" && (s as { e: string }).e === "ticket_refused") || s.t === "close", 10_000);
      c.end();
      return got;
    };
    const proof = (await resumeFrame(t, r, kf.device, true))!;
    expect((await resume(n1, proof)).t).toBe("ready");
    expect(await move(n1, r, "n2")).toMatchObject({ ok: true, shards: 1 });
    // Until n2 adopted the lease (its next tick), a login there gets close try_again: asked again, still within the window.
    let replayed = await resume(n2, proof);
    for (let k = 0; replayed.t === "close" && k < 20; k++) await Bun.sleep(250), (replayed = await resume(n2, proof));
    expect(replayed).toMatchObject({ t: "err", e: "ticket_refused" });
    expect((replayed as { m: string }).m).toContain("replay");
    expect((await resume(n2, (await resumeFrame(t, r, kf.device, true))!)).t).toBe("ready");
  }, 60_000);

  test("a device revoked at the old home: its ticket is refused at the new home, after a kill -9 there too", async () => {
    const r = accountOn("n1", "tv_");
    const [k1, k2] = [await device(r), await device(r)];
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const t = await ticketAt(n1, k2);
    const c1 = await client(k1, "n1");
    await c1.request("device.revoke", { d: k2.device });
    await c1.close();
    const resume = (n: TestServer) => resumeAt(n, t, r, k2.device);
    const revoked = { t: "err", e: "ticket_refused", m: expect.stringContaining("revoked") };
    expect(await resume(n1)).toMatchObject(revoked);
    expect(await move(n1, r, "n2")).toMatchObject({ ok: true, shards: 1 });
    expect(await resume(n2)).toMatchObject(revoked);
    await n2.kill9();
    await n2.restart();
    expect(await resume(n2)).toMatchObject(revoked);
  }, 90_000);

  test("an account deleted at the old home: its name stays reserved at the new home and its device's ticket is refused there, after a kill -9 there too", async () => {
    const r = accountOn("n1", "td_");
    // A live account of the same shard: a shard's ticket keys move with its accounts (Tickets.shardRows), so n2 can
    // verify the deleted account's ticket and only the tombstone refuses it.
    let k = 0;
    while (shardOf(`tdk${k}`) !== shardOf(r)) k++;
    await device(`tdk${k}`);
    const kf = await device(r);
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const t = await ticketAt(n1, kf);
    const del = await fetch(`http://127.0.0.1:${n1.http}/admin/users/${r}/delete`, { method: "POST" });
    expect(await del.json()).toMatchObject({ ok: true });
    const deleted = { t: "err", e: "ticket_refused", m: expect.stringContaining("deleted") };
    expect(await resumeAt(n1, t, r, kf.device)).toMatchObject(deleted);
    expect(() => n1.addUser(r)).toThrow("reserved");
    expect(await move(n1, r, "n2")).toMatchObject({ ok: true, shards: 1 });
    // Without the tombstone in the shipment n2 took the ticket (n1's key came with the shard) and the name was free there.
    const refused = await resumeAt(n2, t, r, kf.device);
    expect(refused).toMatchObject(deleted);
    expect(() => n2.addUser(r)).toThrow("reserved");
    await n2.kill9();
    await n2.restart();
    const again = await resumeAt(n2, t, r, kf.device);
    expect(again).toMatchObject(deleted);
    expect(() => n2.addUser(r)).toThrow("reserved");
  }, 90_000);
});
