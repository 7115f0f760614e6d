/**
 * Blocks across nodes: 3 real `switchboard serve` processes and a private
 * redis-server. A block is kept at the blocker's home and, for an account of
 * another node, at the blocked account's home too (presence.db blocked_by,
 * sent over the node link before block.add answers), so every check about an
 * account is made on its own home with that node's data. Proves:
 * - a blocked sender of another node: its message is refused with `err
 *   blocked` (its id), no `sent`, and nothing of it is queued on any node (the
 *   queue shard files are read); the blocker's own message too ("you blocked");
 *   after block.remove the next message goes through;
 * - `dlv` receipts: a stranger of another node gets at most
 *   presence.stranger_receipts of them (judged at the recipient's home, which
 *   has the recipient's contacts and the accounts it wrote to); none at all to a
 *   sender who blocked the recipient after sending;
 * - group invitations: a member of another node adding an account that blocks
 *   it to a group living on a third node is refused with `res blocked` (checked
 *   at the inviter's home before the operation goes); a creator blocked by a
 *   member of another node cannot create a group with it;
 * - a restart of the blocker's home with a block (then an unblock) whose notice
 *   was never acked (the blocked account's home was down): the start resync
 *   repairs it.
 * No timing assertions: conditions are polled with bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, allHeld, homeOf, threeNodes } from "./three-nodes.ts";
import { waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, msgFrame, msgs, rawLogin, rcpts } from "../wire/util.ts";
import { iq, ok, queuedFor } from "../presence/util.ts";
import type { KeyFile } from "../../src/client/keys.ts";

const RECEIPTS = 3;
const { nodes } = threeNodes(4000, ["--presence-stranger-receipts", String(RECEIPTS), "--presence-stranger-rate", "1000"]);
const home = (a: string): TestServer => nodes.get(homeOf(a))!;
async function login(account: string): Promise<{ c: RawConn; k: KeyFile }> {
  const k = await home(account).newDevice(account);
  return { c: await rawLogin(home(account), k), k };
}
let sid = 0;
/** Sends a message until it is answered with something else than retry_after (the recipient's devices are asked of its home first). */
async function send(c: RawConn, to: string, devices: number[], id = `b${++sid}`, sync: number[] = []): Promise<{ t: string; e?: string; m?: string; id?: string }> {
  for (;;) {
    c.send(msgFrame(id, to, devices, sync));
    const r = (await c.expect((s) => (s.t === "err" || s.t === "sent") && (s as { id?: string }).id === id)) as { t: string; e?: string; m?: string; id?: string };
    if (r.e !== "retry_after") return r;
    await Bun.sleep(100);
  }
}
const queued = (account: string) => [...nodes.values()].reduce((n, srv) => n + queuedFor(srv.dataDir, account).n, 0);

describe("blocks across nodes", () => {
  test("a blocked sender of another node is refused with blocked, nothing queued anywhere; the blocker too; unblocked it goes", async () => {
    const a = accountOn("n1", "ba");
    const b = accountOn("n2", "bb");
    const A = await login(a);
    const B = await login(b);
    const B2k = await home(b).newDevice(b); // b's other device, offline: a sync copy would be queued for it
    expect((await send(B.c, a, [A.k.device], "first", [B2k.device])).t).toBe("sent"); // the pair works, and the directory answers are here
    await A.c.expect("msg");
    const before = { a: queued(a), b: queued(b) };

    await ok(A.c, "block.add", { u: b });
    const r = await send(B.c, a, [A.k.device], "to-blocker", [B2k.device]);
    expect(r).toMatchObject({ t: "err", e: "blocked", id: "to-blocker", m: `${a} does not accept messages from you` });
    const back = await send(A.c, b, [B.k.device, B2k.device], "from-blocker");
    expect(back).toMatchObject({ t: "err", e: "blocked", id: "from-blocker", m: `you blocked ${b}; unblock them to write to them` });
    await barrier(A.c);
    await barrier(B.c);
    expect(msgs(A.c, (m) => m.id.startsWith("to-blocker"))).toEqual([]);
    expect(msgs(B.c, (m) => m.id === "from-blocker")).toEqual([]);
    // Nothing queued on any node: no copy for a, no sync copy for b's other device.
    expect({ a: queued(a), b: queued(b) }).toEqual(before);

    await ok(A.c, "block.remove", { u: b });
    expect((await send(B.c, a, [A.k.device], "after", [B2k.device])).t).toBe("sent");
    await A.c.expect((s) => s.t === "msg" && s.id === "after");
    A.c.end();
    B.c.end();
  });

  test("dlv receipts: at most stranger_receipts to a stranger of another node; none to a sender who blocked the recipient", async () => {
    const r = accountOn("n1", "br");
    const s = accountOn("n3", "bs");
    const R = await login(r);
    const S = await login(s);
    const N = RECEIPTS + 4;
    for (let i = 0; i < N; i++) expect((await send(S.c, r, [R.k.device], `st${i}`)).t).toBe("sent");
    const got = [];
    for (let i = 0; i < N; i++) got.push(await R.c.expect((m) => m.t === "msg" && m.id === `st${i}`));
    R.c.send({ t: "ack", q: got.map((m) => (m as { q: number }).q) });
    await waitFor(() => rcpts(S.c, (x) => x.k === "dlv").length >= RECEIPTS, `${RECEIPTS} dlv receipts to the stranger`);

    // r adds s as a contact: s is no stranger to r any more, every receipt goes.
    await ok(R.c, "contacts.add", { u: [s] });
    expect((await send(S.c, r, [R.k.device], "known")).t).toBe("sent");
    const k = await R.c.expect((m) => m.t === "msg" && m.id === "known");
    R.c.send({ t: "ack", q: [(k as { q: number }).q] });
    await S.c.expect((x) => x.t === "rcpt" && x.k === "dlv" && x.id === "known");
    // Receipts from r's home reach s in order (one link, one queue): every earlier one is in by now, and only the
    // first RECEIPTS of the stranger's messages got one.
    expect(rcpts(S.c, (x) => x.k === "dlv" && typeof x.id === "string" && x.id.startsWith("st")).length).toBe(RECEIPTS);

    // s blocks r after sending (r's device offline meanwhile): r's later acks give s no dlv.
    R.c.end();
    for (let i = 0; i < 2; i++) expect((await send(S.c, r, [R.k.device], `pre${i}`)).t).toBe("sent");
    await ok(S.c, "block.add", { u: r });
    const R2 = await rawLogin(home(r), R.k);
    const pre = [await R2.expect((m) => m.t === "msg" && m.id === "pre0"), await R2.expect((m) => m.t === "msg" && m.id === "pre1")];
    R2.send({ t: "ack", q: pre.map((m) => (m as { q: number }).q) });
    await barrier(R2);
    // Unblocked, a later message's dlv comes the same way: once it is in, any receipt of the acks above would be too.
    await ok(S.c, "block.remove", { u: r });
    expect((await send(S.c, r, [R.k.device], "post")).t).toBe("sent");
    const post = await R2.expect((m) => m.t === "msg" && m.id === "post");
    R2.send({ t: "ack", q: [(post as { q: number }).q] });
    await S.c.expect((x) => x.t === "rcpt" && x.k === "dlv" && x.id === "post");
    expect(rcpts(S.c, (x) => x.k === "dlv" && typeof x.id === "string" && x.id.startsWith("pre"))).toEqual([]);
    R2.end();
    S.c.end();
  });

  test("group invitations across nodes: refused with blocked when the invitee blocks the inviter, wherever the group lives", async () => {
    const g = accountOn("n3", "bg"); // creates the group: it lives on n3
    const d = accountOn("n1", "bd"); // a member of n1 who adds
    const x = accountOn("n2", "bx"); // blocks d
    const G = await login(g);
    const D = await login(d);
    const X = await login(x);
    const grp = (await ok<{ g: string }>(G.c, "group.create", { name: "t", m: [d] })).g;
    await ok(G.c, "group.promote", { g: grp, m: [d] });
    await ok(X.c, "block.add", { u: d });
    const add = await iq(D.c, "group.add", { g: grp, m: [x] });
    expect(add).toMatchObject({ ok: false, e: "blocked" });
    expect(add.m).toContain(x);
    // d creates a group of its own (on n1) naming x: refused there.
    const create = await iq(D.c, "group.create", { name: "u", m: [x] });
    expect(create).toMatchObject({ ok: false, e: "blocked" });
    // Unblocked, the same add goes through.
    await ok(X.c, "block.remove", { u: d });
    await ok(D.c, "group.add", { g: grp, m: [x] });
    for (const c of [G.c, D.c, X.c]) c.end();
  });

  test("a block whose notice the blocked account's home never acked is repaired by the blocker's home at its next start", async () => {
    const a = accountOn("n1", "ra");
    const b = accountOn("n2", "rb");
    const A = await login(a);
    const B = await login(b);
    expect((await send(B.c, a, [A.k.device])).t).toBe("sent");
    B.c.end();
    const n2 = nodes.get("n2")!;
    await n2.kill9();
    // n2 is down: the notice waits in n1's link; block.add answers after its bound.
    await ok(A.c, "block.add", { u: b });
    A.c.end();
    await nodes.get("n1")!.kill9(); // the waiting notice is lost with n1
    await n2.restart();
    await nodes.get("n1")!.restart();
    await allHeld(nodes);
    const A2 = await rawLogin(home(a), A.k);
    const bk2 = await n2.newDevice(b);
    const B2 = await rawLogin(n2, bk2);
    await waitFor(async () => (await send(B2, a, [A.k.device])).e === "blocked", "n1's start resync to reach n2", 60_000);
    // The other way: an unblock whose notice is lost the same way leaves no stale block at n2 after n1's next start.
    B2.end();
    await n2.kill9();
    await ok(A2, "block.remove", { u: b });
    A2.end();
    await nodes.get("n1")!.kill9();
    await n2.restart();
    await nodes.get("n1")!.restart();
    await allHeld(nodes);
    const B3 = await rawLogin(n2, bk2);
    await waitFor(async () => (await send(B3, a, [A.k.device], `u${++sid}`, [B.k.device])).t === "sent", "n1's start resync to clear the block at n2", 60_000);
    B3.end();
  }, 120_000);
});
