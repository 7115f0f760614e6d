/**
 * Drain on SIGTERM: 3 real `switchboard serve` processes and a private redis-server. Under load (a sender on the
 * drained node and one on another node, both sending closed-loop to an account of the drained node, connected
 * there with one device and offline with another), SIGTERM to that node:
 * - it exits 0 after moving every shard it held to the two others (each gets some; no shard is left without a
 *   live owner), its devices are redirected and their SDK clients report no error (no `error`, no close without a reconnect, every
 *   send resolves `sent`);
 * - every message is delivered once, in order per sender, with seqs that only grow; the offline device logs in
 *   through another node later and drains them all from the recipient's new home;
 * - restarted, the node holds nothing (the shards' homes are the others) until `switchboard cluster rebalance` on
 *   the two others gives it back its placement; the devices follow, and messages flow again.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, expectOnceInOrder, plan, status, threeNodes, watchedClient } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { Sent } from "../../src/client/types.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { BUN, MAIN, ROOT, waitFor } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const TTL = 4000;
const { nodes, clients, device } = threeNodes(TTL, ["--presence-stranger-receipts", "100000", "--shutdown-timeout", "60"]);
const text = (p: Uint8Array) => new TextDecoder().decode(p);

describe("drain", () => {
  test("SIGTERM of a node under load: its shards and devices move to the others, nothing lost, no client error", async () => {
    const r = accountOn("n1", "dr_");
    const s = accountOn("n1", "ds_");
    const t = accountOn("n2", "dt_");
    const [kr1, kr2, ks, kt] = [await device(r), await device(r), await device(s), await device(t)];
    const problems: string[] = [];
    const client = (key: KeyFile, via: string, on?: (c: SwitchboardClient) => void) => watchedClient(clients, problems, nodes.get(via)!.tcp, key, on);
    const got: string[] = [];
    await client(kr1, "n1", (c) => c.on("message", (m) => void got.push(text(m.payload))));
    const [cs, ct] = [await client(ks, "n1"), await client(kt, "n2")];
    const sent: Record<string, Sent[]> = { s: [], t: [] };
    let stop = false;
    const loop = (c: SwitchboardClient, p: "s" | "t") => (async () => {
      for (let k = 0; !stop || k < 30; k++) sent[p]!.push(await c.send(r, `${p}${k}`));
    })();
    const loads = [loop(cs, "s"), loop(ct, "t")];
    await waitFor(() => got.length >= 10, "10 messages before the drain", 30_000);
    const held = (await status(nodes.get("n1")!)).held;
    expect(held).toBe(plan.shardsOf("n1").length);
    const code = await nodes.get("n1")!.stop(); // SIGTERM: the drain, then exit
    expect(code).toBe(0);
    const after = sent.s!.length + sent.t!.length;
    await waitFor(() => sent.s!.length + sent.t!.length >= after + 20, "20 more messages sent after the drain", 60_000);
    stop = true;
    await Promise.all(loads);
    const [ns, nt] = [sent.s!.length, sent.t!.length];
    await waitFor(() => got.length >= ns + nt, `all ${ns + nt} messages (have ${got.length})`, 60_000);
    expectOnceInOrder(got, sent);
    const mine = (list: string[], p: string) => list.filter((x) => x.startsWith(p));
    // Every shard n1 held is live on n2 or n3; each took some.
    // (Polled: a target adopts a flipped lease at once on the `moved` message, or at its next tick if it missed it.)
    let st2: any, st3: any;
    await waitFor(async () => {
      [st2, st3] = [await status(nodes.get("n2")!), await status(nodes.get("n3")!)];
      return st2.held + st3.held === 4096 && st2.unowned === 0;
    }, "all 4096 shards held by n2 and n3", 30_000);
    expect(st2.held).toBeGreaterThan(plan.shardsOf("n2").length);
    expect(st3.held).toBeGreaterThan(plan.shardsOf("n3").length);
    // The offline device, through n3: redirected to r's new home, it drains everything.
    const got2: string[] = [];
    await client(kr2, "n3", (c) => c.on("message", (m) => void got2.push(text(m.payload))));
    await waitFor(() => got2.length >= ns + nt, `all ${ns + nt} on the device that was offline (have ${got2.length})`, 60_000);
    expect(mine(got2, "s")).toEqual(mine(got, "s"));
    expect(mine(got2, "t")).toEqual(mine(got, "t"));
    // n1 comes back holding nothing (its shards' homes are the others now); `cluster rebalance` on n2 and n3 gives
    // it back its placement, and the devices follow to it again.
    await nodes.get("n1")!.restart();
    await waitFor(async () => (await status(nodes.get("n2")!)).nodes.find((x: { id: string }) => x.id === "n1").up, "n1 up again", 60_000);
    expect((await status(nodes.get("n1")!)).held).toBe(0);
    for (const id of ["n2", "n3"]) {
      const p = Bun.spawn([BUN, MAIN, "cluster", "rebalance", "--http-port", String(nodes.get(id)!.http)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
      const [o, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      expect(code).toBe(0);
      expect(o).toContain("moved ");
    }
    await waitFor(async () => (await status(nodes.get("n1")!)).held === held, `n1 holding its ${held} shards again`, 60_000);
    const before = got.length;
    const more = await Promise.all([cs.send(r, "back-s"), ct.send(r, "back-t")]);
    await waitFor(() => got.length >= before + 2, "the two messages after the rebalance", 60_000);
    expect(got.slice(before).sort()).toEqual(["back-s", "back-t"]);
    expect(more[0]!.seq).toBeGreaterThan(sent.s![ns - 1]!.seq);
    expect(problems).toEqual([]); // SDK errors and closes without a reconnect, each named
  }, 240_000);
});
