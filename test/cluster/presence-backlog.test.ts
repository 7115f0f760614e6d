/**
 * Presence items towards a dead node are bounded by size, not only by a lease: 3 real `switchboard serve`
 * processes and a private redis-server, presence.peer_backlog 20. The watched account t lives on n1, its watcher w
 * on n2. n1 is killed with -9: n2's renewals and w's typing to t pile up towards it no further than the backlog
 * (switchboard_presence_peer_backlog on n2 stays ≤ 20 while 100 typing notices are sent; the rest are counted as
 * dropped). n1 restarted: the backlog drains to 0, n2's next renewal restores its interest there, and a change of t
 * reaches w again. Checked by mutation (no cap: the backlog passes 20).
 * No timing assertions: conditions are polled with bounds.
 */
import { expect, test } from "bun:test";
import { accountOn, allHeld, threeNodes } from "./three-nodes.ts";
import { waitFor } from "../helpers/harness.ts";
import { barrier, rawLogin } from "../wire/util.ts";
import { ok } from "../presence/util.ts";

const LEASE = 3000;
const BACKLOG = 20;
const { nodes } = threeNodes(4000, [
  "--presence-grace-ms", "0", "--presence-coalesce-ms", "0", "--presence-lease-ms", String(LEASE),
  "--presence-typing-rate", "1000", "--presence-peer-backlog", String(BACKLOG),
]);
const metric = (node: string, name: string) => nodes.get(node)!.metric(name).catch(() => 0);

test("items to a node killed with -9 stay within presence.peer_backlog; after its restart they drain and frames flow", async () => {
  const n1 = nodes.get("n1")!;
  const n2 = nodes.get("n2")!;
  const t = accountOn("n1", "kt");
  const w = accountOn("n2", "kw");
  const kt = await n1.newDevice(t);
  let ct = await rawLogin(n1, kt);
  const cw = await rawLogin(n2, await n2.newDevice(w));
  await ok(ct, "contacts.add", { u: [w] });
  await ok(cw, "contacts.add", { u: [t] });
  expect((await ok<{ p: unknown[] }>(cw, "presence.sub", { u: [t] })).p).toEqual([{ u: t, online: false }]);
  let rid = 3_000_000;
  const renew = setInterval(() => cw.send({ t: "iq", id: ++rid, op: "presence.sub", a: { u: [t] } }), LEASE / 3);
  try {
    await n1.kill9();
    const dropped0 = await metric("n2", "switchboard_presence_peer_items_dropped_total");
    let peak = 0;
    for (let i = 0; i < 100; i++) {
      cw.send({ t: "pres", to: t, s: i % 2 ? "paused" : "typing" });
      if (i % 10 === 9) {
        await barrier(cw);
        peak = Math.max(peak, await metric("n2", "switchboard_presence_peer_backlog"));
      }
    }
    await barrier(cw);
    // A renewal or two of n2 towards the dead n1 as well (every lease/3).
    await waitFor(async () => (await metric("n2", "switchboard_presence_peer_items_dropped_total")) - dropped0 >= 100 - BACKLOG, "the items beyond the backlog to be dropped");
    peak = Math.max(peak, await metric("n2", "switchboard_presence_peer_backlog"));
    expect(peak).toBeLessThanOrEqual(BACKLOG);
    expect(peak).toBeGreaterThan(0);

    await n1.restart();
    await allHeld(nodes);
    await waitFor(async () => (await metric("n2", "switchboard_presence_peer_backlog")) === 0, "n2's backlog to n1 to drain after n1's restart", 30_000);
    ct = await rawLogin(n1, kt);
    // n2's renewals bring its interest back on n1; then a change of t reaches w.
    await waitFor(async () => (await metric("n1", "switchboard_presence_peer_interests")) >= 1, "n1 to hold n2's interest again", 30_000);
    await ok(ct, "presence.state", { s: "active" });
    await cw.expect((s) => s.t === "pst" && s.u === t && s.online === true);
  } finally {
    clearInterval(renew);
  }
  ct.end();
  cw.end();
}, 120_000);
