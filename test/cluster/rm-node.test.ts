/**
 * Removing a node from a running cluster (docs/CLUSTER.md "Removing a node"): 3 real `switchboard serve` processes
 * and a private redis-server. Under closed-loop load across nodes (senders on n1 and n2 to an account homed on n3,
 * connected there with one device and offline with another; a sender on n3 to an account on n2):
 * - a start with cluster.nodes = n1,n2 while n3 is up is refused, naming the procedure;
 * - n3 is drained (SIGTERM, exit 0) and stays stopped: each of its shards is recorded in sb:homes on its placement
 *   over n1,n2 (the drain's rendezvous over the live nodes is that placement), its heartbeat is gone, its drained
 *   mark is set;
 * - n1 and n2 restart one at a time with n1,n2 (the first records the list: LEAVE), then `cluster rebalance` on
 *   each: they hold all 4096 shards, each exactly its placement over n1,n2;
 * - an item n1 kept for n3 that n3 never acked (a receipt for r, put into n1's outbox while n1 is stopped, as one
 *   sent to n3 after its drain's last ack by a node that had not heard of the flip would be) reaches r's devices
 *   once from r's home after n1's restart (rows.ts rehomeKept; without it, never: checked by mutation);
 * - every message is delivered once, in order per sender, seqs only growing, and every device is served: the
 *   offline one logs in through the node that is not its home and drains everything there (redirected);
 * - at the end n1 stops (drained to n2: marked as holding nothing) and then n2 (nowhere to drain: not marked).
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { Sent } from "../../src/client/types.ts";
import { Assignment, shardOf } from "../../src/core/cluster/shards.ts";
import { encodeBody } from "../../src/protocol/codec.ts";
import { SqlitePeerOutbox } from "../../src/store/outbox.ts";
import { ItemKind } from "../../src/store/queue.ts";
import { BUN, MAIN, ROOT, waitFor } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { expectOnceInOrder, plan, status, threeNodes, watchedClient } from "./three-nodes.ts";

const TTL = 4000;
const NEW = ["n1", "n2"];
const after = new Assignment(NEW);
const extra = ["--presence-stranger-receipts", "100000", "--shutdown-timeout", "60"];
const t = threeNodes(TTL, extra);
const { nodes, clients, device } = t;
const text = (p: Uint8Array) => new TextDecoder().decode(p);
/** The first name with this prefix homed on `was` under n1,n2,n3 and on `now` under n1,n2. */
const name = (prefix: string, was: string, now: string) => {
  for (let i = 0; ; i++) if (plan.ownerOf(shardOf(`${prefix}${i}`)) === was && after.ownerOf(shardOf(`${prefix}${i}`)) === now) return `${prefix}${i}`;
};
const newArgs = (id: string) => ["--cluster-redis", t.redis().url, "--cluster-node-id", id, "--cluster-nodes", NEW.join(","), "--cluster-lease-ttl", String(TTL), "--canary-interval", "0", ...extra];
const held = async (id: string) => (await status(nodes.get(id)!)).held as number;
const seen = async (via: string, id: string) => (await status(nodes.get(via)!)).nodes.find((x: { id: string }) => x.id === id)?.up === true;

/** A node started with cluster.nodes = n1,n2 in a fresh data dir, which must be refused: its stderr. */
async function refusedStart(id: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "sb-rm-"));
  try {
    const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dir, "--tcp-port", "0", "--tls-port", "-1", "--ws-port", "-1", "--ws-tls-port", "-1", "--http-port", "0", "--log-level", "warn", ...newArgs(id)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
    const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    expect(code).not.toBe(0);
    return err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("removing a node", () => {
  test("n3 leaves n1,n2,n3 under load: refused while up; drain, restarts with n1,n2, rebalance; nothing lost", async () => {
    const redis = t.redis();
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2,n3");
    const r = name("rr_", "n3", "n1"), s = name("rs_", "n1", "n1"), u = name("ru_", "n3", "n2"), w = name("rw_", "n2", "n2");
    const [kr1, kr2, ks, ku, kw] = [await device(r), await device(r), await device(s), await device(u), await device(w)];
    const kt = await device(name("rt_", "n2", "n2"));
    const problems: string[] = [];
    const client = (key: KeyFile, via: string, on?: (c: SwitchboardClient) => void) => watchedClient(clients, problems, nodes.get(via)!.tcp, key, on);
    const got: string[] = [], gotW: string[] = [], stranded: string[] = [];
    const onStranded = (c: SwitchboardClient, who: string) => c.on("receipt", (x) => void (x.id === "stranded-1" && stranded.push(who)));
    await client(kr1, "n3", (c) => (c.on("message", (m) => void got.push(text(m.payload))), onStranded(c, "kr1")));
    await client(kw, "n2", (c) => c.on("message", (m) => void gotW.push(text(m.payload))));
    const [cs, ct, cu] = [await client(ks, "n1"), await client(kt, "n2"), await client(ku, "n3")];
    const sent: Record<string, Sent[]> = { s: [], t: [], u: [] };
    let stop = false;
    const loop = (c: SwitchboardClient, p: "s" | "t" | "u", to: string) => (async () => {
      for (let k = 0; !stop || k < 30; k++) sent[p]!.push(await c.send(to, `${p}${k}`));
    })();
    const loads = [loop(cs, "s", r), loop(ct, "t", r), loop(cu, "u", w)];
    const total = () => sent.s!.length + sent.t!.length + sent.u!.length;
    await waitFor(() => got.length >= 10 && gotW.length >= 5, "messages flowing before the removal", 30_000);

    // While n3 is up, the shorter list is refused: n3's shards' data is there.
    const live = await refusedStart("n1");
    expect(live).toContain("n3 is up");
    expect(live).toContain('cluster.nodes = "n1,n2,n3"');
    expect(live).toContain('"Removing a node"');
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2,n3");

    // The drain: n3's shards go to the live nodes, which is their placement over n1,n2.
    expect(await nodes.get("n3")!.stop()).toBe(0);
    const homes = (await redis.cli("HGETALL", "sb:homes")).split("\n");
    const recorded = new Map<number, string>();
    for (let i = 0; i < homes.length; i += 2) recorded.set(Number(homes[i]), homes[i + 1]!);
    const wrong = plan.shardsOf("n3").filter((sh) => !/^n[12]\|[1-9]\d*$/.test(recorded.get(sh) ?? "") || !recorded.get(sh)!.startsWith(`${after.ownerOf(sh)}|`));
    expect(wrong).toEqual([]);
    expect(await redis.cli("GET", "sb:drained:n3")).toBe("1");
    expect(await redis.cli("EXISTS", "sb:node:n3")).toBe("0");
    await waitFor(async () => !(await seen("n1", "n3")) && !(await seen("n2", "n3")), "n3 down as n1 and n2 see it", 30_000);
    const mark = total();
    await waitFor(() => total() >= mark + 20, "20 more messages sent after the drain", 60_000);
    // Rolling restart with the new list: the first records it (LEAVE), the second finds it recorded.
    const again = async (id: string, other: string, stopped = () => {}) => {
      expect(await nodes.get(id)!.stop()).toBe(0);
      stopped();
      await nodes.get(id)!.restart([...newArgs(id), "--tcp-port", String(nodes.get(id)!.tcp)]);
      await waitFor(() => seen(other, id), `${id} up again as ${other} sees it`, 60_000);
    };
    await again("n1", "n2", () => {
      const box = new SqlitePeerOutbox(join(nodes.get("n1")!.dataDir, "outbox.db"));
      const ts = Date.now();
      const m = { kind: ItemKind.RECEIPT, fromAccount: w, fromDevice: kw.device, cid: "stranded-1", seq: 1, ts };
      const rcpt = { t: "rcpt", q: 0, k: "dlv", u: w, d: kw.device, w, seq: 1, id: "stranded-1", ts };
      box.put("n3", [{ key: "d\u0000n1\u0000rm-node\u00001", body: encodeBody({ k: "d", a: r, m, s: rcpt, x: 0 }) }]);
      box.close();
    });
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2");
    expect(await redis.cli("EXISTS", "sb:drained:n1")).toBe("0"); // drained at its stop, marked; taking part again, unmarked
    await again("n2", "n1");
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2");
    for (const id of NEW) {
      const p = Bun.spawn([BUN, MAIN, "cluster", "rebalance", "--http-port", String(nodes.get(id)!.http)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
      const [o, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
      expect(code).toBe(0);
      expect(o).toContain("moved ");
    }
    await waitFor(async () => (await held("n1")) === after.shardsOf("n1").length && (await held("n2")) === after.shardsOf("n2").length, `n1 and n2 holding their placement over n1,n2 (${NEW.map((id) => after.shardsOf(id).length)})`, 60_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}; held ${await Promise.all(NEW.map(held))}`);
    });
    expect(after.shardsOf("n1").length + after.shardsOf("n2").length).toBe(4096);
    const st = await status(nodes.get("n1")!);
    expect(st.unowned).toBe(0);
    expect(st.nodes.map((x: { id: string }) => x.id).sort()).toEqual(NEW);

    const mark2 = total();
    await waitFor(() => total() >= mark2 + 20, "20 more messages sent after the rebalance", 60_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}: sent ${total()}, got ${got.length} + ${gotW.length}; ${problems.join("; ")}`);
    });
    stop = true;
    await Promise.all(loads);
    const [ns, nt, nu] = [sent.s!.length, sent.t!.length, sent.u!.length];
    await waitFor(() => got.length >= ns + nt && gotW.length >= nu, `all ${ns + nt} + ${nu} messages (have ${got.length} + ${gotW.length})`, 60_000);
    expectOnceInOrder(got, { s: sent.s!, t: sent.t! });
    expectOnceInOrder(gotW, { u: sent.u! });
    // r lives on n1 now (its placement over n1,n2): the offline device logs in through n2, is redirected, drains all.
    const got2: string[] = [];
    await client(kr2, "n2", (c) => (c.on("message", (m) => void got2.push(text(m.payload))), onStranded(c, "kr2")));
    await waitFor(() => got2.length >= ns + nt, `all ${ns + nt} on the device that was offline (have ${got2.length})`, 60_000);
    const mine = (list: string[], p: string) => list.filter((x) => x.startsWith(p));
    expect(mine(got2, "s")).toEqual(mine(got, "s"));
    expect(mine(got2, "t")).toEqual(mine(got, "t"));
    await waitFor(async () => (await nodes.get("n1")!.metric("switchboard_sessions")) >= 3, "r's two devices and s in session on n1", 30_000);
    // u (on n3 before) sends from its new home n2, above every seq it had.
    const last = await cu.send(w, "after");
    expect(last.seq).toBeGreaterThan(sent.u![nu - 1]!.seq);
    await waitFor(() => gotW.includes("after"), "u's message from its new home", 30_000);
    // The item n1 kept for n3: once on each of r's devices, and gone from n1's outbox.
    await waitFor(() => stranded.length >= 2, `the receipt kept for n3 on both of r's devices (${stranded})`, 30_000);
    expect(stranded.sort()).toEqual(["kr1", "kr2"]);
    const box = new Database(join(nodes.get("n1")!.dataDir, "outbox.db"), { readonly: true });
    expect(box.query("SELECT count(*) AS n FROM outbox WHERE peer = 'n3'").get()).toEqual({ n: 0 });
    box.close();
    expect(problems).toEqual([]); // SDK errors and closes without a reconnect, each named
    // The drained mark says "holds nothing" only: n1 drained to n2 has it, n2 stopping last (no live node to drain
    // to: it keeps its shards) does not, so a removal of n2 would be refused.
    for (const c of clients) await c.close().catch(() => {});
    expect(await nodes.get("n1")!.stop()).toBe(0);
    expect(await nodes.get("n2")!.stop()).toBe(0);
    expect(await redis.cli("GET", "sb:drained:n1")).toBe("1");
    expect(await redis.cli("EXISTS", "sb:drained:n2")).toBe("0");
  }, 300_000);
});
