/**
 * Forwarded group operations when the group's node goes away: 3 real `switchboard serve` processes and a
 * private redis-server; a group on n2, its admin's device on n1 (its iqs go over the link, forward.ts `o`).
 * Proves, over real sockets:
 * - a ProxyConn on the group's node goes when the device's connection closes on its own node (item `z`);
 * - an iq the group's node acked and had not answered when it was killed with -9 is answered explicitly
 *   (`retry_after {lost}`, counted on n1) instead of never: the SDK sends it again, and its promise settles.
 * The iq is held unanswered on n2 by a SIGSTOPped n3 (the add names an account homed there, whose devices n2
 * asks n3 for first); the long lease TTL keeps n3 "up" meanwhile. No timing assertions.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";
import { plan } from "./three-nodes.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";

const TTL = 20_000;
const { nodes, device, args, connect } = threeNodes(TTL, ["--presence-stranger-receipts", "100000"]);
const client = (key: KeyFile) => connect(key, homeOf(key.account));
const lag = (from: string, to: string) => nodes.get(from)!.metric("switchboard_cluster_link_lag_batches", `{peer="${to}"}`);

describe("forwarded group operations, 3 server processes and redis-server", () => {
  let g = "";
  let admin: SwitchboardClient;
  let kadmin: KeyFile;

  test("a ProxyConn on the group's node goes when the device's connection closes on its node", async () => {
    const owner = await client(await device(accountOn("n2", "go_")));
    kadmin = await device(accountOn("n1", "ga_"));
    ({ g } = await owner.createGroup("ops", [kadmin.account]));
    expect(plan.ownerOf(shardOf(g))).toBe("n2");
    await owner.promote(g, [kadmin.account]);
    const n2 = nodes.get("n2")!;
    const before = await n2.metric("switchboard_cluster_proxies");
    const once = await client(kadmin);
    expect((await once.groupInfo(g)).members.length).toBe(2); // n1 -> n2: a ProxyConn there
    expect(await n2.metric("switchboard_cluster_proxies")).toBe(before + 1);
    await once.close();
    await waitFor(async () => (await n2.metric("switchboard_cluster_proxies")) === before, "n2 to drop the closed connection's ProxyConn", 30_000);
    admin = await client(kadmin);
  }, 120_000);

  test("kill -9 of the group's node with an acked iq unanswered: retry_after {lost} from n1, the SDK retries, the promise settles", async () => {
    const [n1, n2, n3] = ["n1", "n2", "n3"].map((id) => nodes.get(id)!) as [TestServer, TestServer, TestServer];
    const invited = accountOn("n3", "gi_");
    await device(invited);
    const lostBefore = await n1.metric("switchboard_cluster_iqs_lost_total", `{why="link_dropped"}`);
    n3.proc.kill("SIGSTOP");
    try {
      await waitFor(async () => (await lag("n2", "n3")) === 0, "n2 with nothing in flight to n3", 30_000);
      let settled: string | null = null;
      const add = admin.addMembers(g, [invited]).then(
        () => (settled = "ok"),
        (e) => (settled = `${e.code}`),
      );
      // n2 has the add (acked to n1) and waits for n3's answer about the invited account's devices.
      await waitFor(async () => (await lag("n2", "n3")) > 0, "n2 asking the stopped n3", 30_000);
      expect(settled).toBe(null);
      await n2.kill9();
      await waitFor(async () => (await n1.metric("switchboard_cluster_iqs_lost_total", `{why="link_dropped"}`)) === lostBefore + 1, "n1 to answer the lost iq", 30_000);
      await n2.restart(args("n2"));
      n3.proc.kill("SIGCONT");
      await waitFor(() => settled !== null, "the SDK's add to settle after its retry", 60_000);
      await add;
      // The retry was done, or refused explicitly with retry_after while the restarted n2 took its shards back.
      expect(["ok", "retry_after"]).toContain(settled!);
      // Either way the state is consistent: adding again ends with the account a member (done now, or
      // bad_field "already a member").
      await waitFor(async () => {
        const r = await admin.addMembers(g, [invited]).then(() => "ok", (e) => String(e.code));
        return r === "ok" || r === "bad_field";
      }, "the invited account added", 60_000);
      expect((await admin.groupInfo(g)).members.some((m) => m.u === invited)).toBe(true);
    } finally {
      n3.proc.kill("SIGCONT");
    }
  }, 180_000);
});
