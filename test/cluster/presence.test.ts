/**
 * Presence across nodes: 3 real `switchboard serve` processes and a private
 * redis-server. The watched account t is homed on n1; its watchers are
 * homed on n2 and n3 (two on each) and log in there. Proves over real sockets
 * and node links, reading every frame the watchers receive:
 * - subscribing to a remote account is answered by its home (views, `no`);
 * - a change of t costs ONE presence item per interested node (n1's
 *   switchboard_presence_peer_items_total{kind="v"}), not one per watcher, and
 *   every watcher gets its `pst`;
 * - the watcher's own policy (reciprocity) is applied at t's home from the half
 *   its node forwards; a block by t on a watcher of another node: that watcher
 *   is refused at subscribe, sees no frame, its typing goes nowhere, and a block
 *   mid-subscription ends it with `privacy`; typing between acquainted accounts
 *   of two nodes arrives;
 * - t's privacy change to nobody ends every remote subscription (`privacy`);
 * - typing across nodes writes nothing to any SQLite file of either node;
 * - kill -9 of a watcher's node ends its interest on n1 (the node-level lease),
 *   and the next change costs one item fewer; kill -9 and restart of the
 *   watched account's home: the interest is renewed there and frames flow.
 * No timing assertions: conditions are polled with bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, plan, status, threeNodes } from "./three-nodes.ts";
import { waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, rawLogin } from "../wire/util.ts";
import { ChangeCounters, iq, ok, psts } from "../presence/util.ts";
import type { Pst } from "../../src/protocol/stanzas.ts";

const LEASE = 3000;
const { nodes } = threeNodes(4000, ["--presence-grace-ms", "0", "--presence-coalesce-ms", "0", "--presence-lease-ms", String(LEASE), "--presence-stranger-rate", "1000"]);
const home = (a: string): TestServer => nodes.get(homeOf(a))!;
async function login(account: string): Promise<RawConn> {
  const srv = home(account);
  return rawLogin(srv, await srv.newDevice(account));
}
async function metric(srv: TestServer, name: string, labels = ""): Promise<number> {
  try {
    return await srv.metric(name, labels);
  } catch {
    return 0; // a counter with labels appears at its first increment
  }
}
const vItems = () => metric(nodes.get("n1")!, "switchboard_presence_peer_items_total", '{kind="v"}');

describe("presence across nodes", () => {
  // First in the file: later tests' accounts go offline and write their last seen (one row each), which would land in
  // this window; this test's own accounts never go online.
  test("typing across nodes causes no SQLite write on either node (cluster.db, the lease fence, aside)", async () => {
    const t = accountOn("n1", "qt");
    const w = accountOn("n2", "qw");
    const ct = await login(t);
    const cw = await login(w);
    await ok(ct, "contacts.add", { u: [w] });
    await ok(cw, "contacts.add", { u: [t] });
    // Warm: the first typing crosses the link once (nothing of it is stored either, but the link's first connect is not measured).
    cw.send({ t: "pres", to: t, s: "typing" });
    await ct.expect((s) => s.t === "pres" && (s as { u: string }).u === w);
    await barrier(cw);
    // cluster.db holds the shard epochs the lease manager writes when a lease changes hands: not presence's.
    const counters = ["n1", "n2"].map((id) => new ChangeCounters(nodes.get(id)!.dataDir, (f) => !f.endsWith("cluster.db")));
    try {
      const before = counters.map((c) => c.read());
      for (let i = 0; i < 10; i++) cw.send({ t: "pres", to: t, s: i % 2 ? "typing" : "paused" });
      await barrier(cw);
      await waitFor(() => ct.received.filter((s) => s.t === "pres" && (s as { u: string }).u === w).length >= 11, "10 typing notices across the link");
      await barrier(ct);
      expect(counters.map((c) => c.read())).toEqual(before);
    } finally {
      for (const c of counters) c.close();
    }
    ct.end();
    cw.end();
  });

  test("one item per interested node per change; reciprocity, blocks, typing, privacy end, kill -9 of a watcher's node", async () => {
    const t = accountOn("n1", "pt");
    const w = [accountOn("n2", "pw2a"), accountOn("n2", "pw2b"), accountOn("n3", "pw3a"), accountOn("n3", "pw3b")];
    const bx = accountOn("n2", "pbx");
    const ct = await login(t);
    const cw = await Promise.all(w.map(login));
    const cbx = await login(bx);
    // Contacts across nodes (their existence is asked of their homes).
    await ok(ct, "contacts.add", { u: [...w, bx] });
    for (const c of [...cw, cbx]) await ok(c, "contacts.add", { u: [t] });
    await ok(ct, "block.add", { u: bx });

    for (const c of cw) expect(await ok(c, "presence.sub", { u: [t] })).toEqual({ lease: LEASE, p: [{ u: t, online: false }], no: [] });
    // Renewed as the SDK does (answers are kind "answer", not counted as change items below).
    let rid = 1_000_000;
    const renew = setInterval(() => {
      for (const c of cw) c.send({ t: "iq", id: ++rid, op: "presence.sub", a: { u: [t] } });
    }, LEASE / 3);
    expect(await ok(cbx, "presence.sub", { u: [t] })).toEqual({ lease: LEASE, p: [], no: [t] });
    expect(await ok(cbx, "presence", { u: t })).toEqual({});
    await waitFor(async () => (await metric(nodes.get("n1")!, "switchboard_presence_peer_interests")) === 2, "n1 to hold one interest per watching node (2)");
    expect(await metric(nodes.get("n1")!, "switchboard_presence_peer_watchers")).toBe(4);

    // A change: one `v` item per interested node, a pst for every watcher.
    let before = await vItems();
    await ok(ct, "presence.state", { s: "active" });
    for (const c of cw) expect(await c.expect("pst")).toEqual({ t: "pst", u: t, online: true });
    for (const c of cw) await barrier(c);
    expect((await vItems()) - before).toBe(2);
    before = await vItems();
    await ok(ct, "presence.state", { s: "idle" });
    const offs = await Promise.all(cw.map((c) => c.expect((s) => s.t === "pst" && s.online === false)));
    const ls = (offs[0] as Pst).ls!;
    expect(ls % 60_000).toBe(0);
    for (const o of offs) expect(o).toEqual({ t: "pst", u: t, online: false, ls });
    for (const c of cw) await barrier(c);
    expect((await vItems()) - before).toBe(2);

    // Reciprocity decided at t's home from the half w[1]'s node forwards: it hides its own online state.
    await ok(cw[1]!, "privacy.set", { online: "nobody" });
    expect(await cw[1]!.expect((s) => s.t === "pst" && s.online === undefined)).toEqual({ t: "pst", u: t, ls });
    const hidden = psts(cw[1]!, t).length;
    await ok(ct, "presence.state", { s: "active" });
    await cw[0]!.expect((s) => s.t === "pst" && s.online === true);
    await ok(ct, "presence.state", { s: "idle" });
    await cw[0]!.expect((s) => s.t === "pst" && s.online === false && s.ls !== undefined);
    await barrier(cw[1]!);
    // Online hidden: w[1] never sees it, only last seen (unchanged within the minute, or moved).
    for (const p of psts(cw[1]!, t).slice(hidden)) expect(p).toEqual({ t: "pst", u: t, ls: p.ls! });

    // Typing across nodes: from an acquainted watcher it arrives; from the blocked one it goes nowhere.
    cbx.send({ t: "pres", to: t, s: "typing" });
    cw[2]!.send({ t: "pres", to: t, s: "typing" });
    expect(await ct.expect("pres")).toMatchObject({ t: "pres", u: w[2], s: "typing" });
    await barrier(cbx);
    await barrier(cw[2]!);
    await barrier(ct);
    expect(ct.received.filter((s) => s.t === "pres").map((s) => (s as { u: string }).u)).toEqual([w[2]!]);
    // The blocked watcher on n2 was sent nothing about t, ever.
    await barrier(cbx);
    expect(psts(cbx, t)).toEqual([]);

    // A block mid-subscription ends it with privacy, on the other node.
    await ok(ct, "block.add", { u: w[3] });
    expect(await cw[3]!.expect((s) => s.t === "pst" && s.end !== undefined)).toEqual({ t: "pst", u: t, end: "privacy" });

    // kill -9 of n3 (w[2], w[3]'s node): its interest in t ends with its lease on n1.
    await nodes.get("n3")!.kill9();
    await waitFor(async () => (await metric(nodes.get("n1")!, "switchboard_presence_peer_interests")) === 1, "n1 to drop the interest of the killed n3", 4 * LEASE + 10_000);
    before = await vItems();
    await ok(ct, "presence.state", { s: "active" });
    await cw[0]!.expect((s) => s.t === "pst" && s.online === true);
    await barrier(cw[0]!);
    expect((await vItems()) - before).toBe(1);

    // t's privacy to nobody ends every remote subscription that is left.
    await ok(ct, "privacy.set", { ls: "nobody", online: "nobody" });
    for (const c of [cw[0]!, cw[1]!]) expect(await c.expect((s) => s.t === "pst" && s.end !== undefined)).toEqual({ t: "pst", u: t, end: "privacy" });
    await waitFor(async () => (await metric(nodes.get("n1")!, "switchboard_presence_peer_watchers")) === 0, "n1 to forget n2's watchers once their subscriptions ended");
    const r = await iq(cw[0]!, "presence.sub", { u: [t] });
    expect(r.r).toEqual({ lease: LEASE, p: [], no: [t] });
    clearInterval(renew);
    for (const c of [ct, cw[0]!, cw[1]!, cbx]) c.end();
  });

  test("kill -9 and restart of the watched account's home: the watcher's node renews its interest there and frames flow again", async () => {
    const t = accountOn("n1", "rt");
    const w = accountOn("n2", "rw");
    const n1 = nodes.get("n1")!;
    const kt = await n1.newDevice(t);
    let ct = await rawLogin(n1, kt);
    const cw = await login(w);
    await ok(ct, "contacts.add", { u: [w] });
    await ok(cw, "contacts.add", { u: [t] });
    expect((await ok<{ p: unknown[] }>(cw, "presence.sub", { u: [t] })).p).toEqual([{ u: t, online: false }]);
    let rid = 2_000_000;
    const renew = setInterval(() => cw.send({ t: "iq", id: ++rid, op: "presence.sub", a: { u: [t] } }), LEASE / 3);
    await n1.kill9();
    await n1.restart();
    await waitFor(async () => (await status(n1).catch(() => ({ held: -1 }))).held === plan.shardsOf("n1").length, "the restarted n1 to hold its shards", 60_000);
    // Nothing of n2's interest survived in n1's memory: n2's renewal (or the device's) brings it back.
    await waitFor(async () => (await metric(n1, "switchboard_presence_peer_interests")) === 1, "n2's interest in t to be back on n1", 30_000);
    ct = await rawLogin(n1, kt);
    await ok(ct, "presence.state", { s: "active" });
    expect(await cw.expect((s) => s.t === "pst" && s.online === true)).toEqual({ t: "pst", u: t, online: true });
    clearInterval(renew);
    ct.end();
    cw.end();
  });
});
