/**
 * A shard whose rows of every kind exceed a chunk moves in chunks, across a kill -9 of either side: 3 real
 * `switchboard serve` processes and a private redis-server, chunks of 1 KiB (cluster.move_chunk_bytes, its minimum).
 * 40 accounts of n1 hash to one shard: their account, device and enrollment code rows, the sequence bound of a
 * conversation the shard numbers, 20 acceptance records (a sender that does not confirm, so they stay), 39
 * contacts, a key bundle with 40 one-time prekeys, and three queued messages for each of 39 offline devices: each
 * kind alone more than one chunk (before, all but the items went whole in the first chunk). The move is started,
 * and after a seeded 0-40 ms the source (n1) is killed with -9, or the target (n2) is SIGSTOPped and, the move not
 * being over, killed with -9 once a chunk is in flight to it; then restarted; if the shard is still n1's, it is
 * moved again. Proves: the shard ends on n2 with every row the source had (compared row by row
 * in the SQLite files: accounts.db, keys.db, presence.db, the queue files' items and acceptance records), nothing
 * doubled, and a device of it gets its messages once, in order, from the new home.
 * Randomized delays: the seed is printed in the test name (rerun with SB_SEED=...).
 */
import { describe, expect, test } from "bun:test";
import { prng } from "../helpers/prng.ts";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { accountOn, homeOf, status, threeNodes } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import { SecureClient } from "../../src/client/secure.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";

const TTL = 4000;
const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);
const rand = prng(SEED);
const t = threeNodes(TTL, ["--cluster-move-chunk-bytes", "1024", "--presence-stranger-receipts", "100000"]);
const { nodes, device, connect: client } = t;
const text = (p: Uint8Array) => new TextDecoder().decode(p);
const ACCOUNTS = 40;

/** `n` account names with this prefix in the home shard of the first one (homed on n1). */
function oneShard(prefix: string, n: number): string[] {
  const first = accountOn("n1", prefix);
  const out = [first];
  for (let i = 0; out.length < n; i++) if (shardOf(`${prefix}x${i}`) === shardOf(first)) out.push(`${prefix}x${i}`);
  return out;
}

/** Rows of `sql` (one `?` list of the accounts) in a node's file, as sorted JSON lines (blobs as hex). */
function rowsIn(path: string, sql: string, accounts: string[]): string[] {
  // Opened read-only beside the running node (WAL: a reader sees its last commit).
  if (!existsSync(path)) return [];
  const db = new Database(path, { readonly: true });
  try {
    const q = sql.replace("(?)", `(${accounts.map(() => "?").join(",")})`);
    return (db.query(q).all(...accounts) as Record<string, unknown>[]).map((r) => JSON.stringify(r, (_, v) => (v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v))).sort();
  } finally {
    db.close();
  }
}

/** Every row of these accounts on node `n` that a move ships (queue ids are the target's own, so not compared). */
function shardRows(n: TestServer, accounts: string[]): Record<string, string[]> {
  const d = n.dataDir;
  const queues = existsSync(join(d, "queues")) ? readdirSync(join(d, "queues")).filter((f) => f.endsWith(".db")).map((f) => join(d, "queues", f)) : [];
  const inQueues = (sql: string) => queues.flatMap((f) => rowsIn(f, sql, accounts)).sort();
  return {
    accounts: rowsIn(join(d, "accounts.db"), "SELECT * FROM accounts WHERE name IN (?)", accounts),
    devices: rowsIn(join(d, "accounts.db"), "SELECT * FROM devices WHERE account IN (?)", accounts),
    codes: rowsIn(join(d, "accounts.db"), "SELECT * FROM enroll_codes WHERE account IN (?)", accounts),
    seqs: rowsIn(join(d, "accounts.db"), "SELECT * FROM seqs WHERE substr(conv, 1, instr(conv, char(0)) - 1) IN (?)", accounts),
    identities: rowsIn(join(d, "keys.db"), "SELECT * FROM identities WHERE account IN (?)", accounts),
    otks: rowsIn(join(d, "keys.db"), "SELECT * FROM otks WHERE account IN (?)", accounts),
    contacts: rowsIn(join(d, "presence.db"), "SELECT * FROM contacts WHERE account IN (?)", accounts),
    items: inQueues("SELECT account, device, kind, from_account, from_device, cid, seq, conv, ts, length(body) > 800 AS b FROM items WHERE account IN (?)"), // the body's q is the target's
    records: inQueues("SELECT * FROM accepted WHERE sender IN (?) AND device > 0"),
  };
}

async function moveTo(from: TestServer, shard: number, to: string): Promise<Record<string, unknown>> {
  return fetch(`http://127.0.0.1:${from.http}/cluster/move?shard=${shard}&to=${to}`, { method: "POST" }).then((x) => x.json() as Promise<Record<string, unknown>>).catch((e) => ({ ok: false, reason: String(e) }));
}

describe(`a shard's rows of every kind in chunks, kill -9 mid-move (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  for (const victim of ["n2", "n1"] as const) {
    test(`kill -9 of the ${victim === "n2" ? "target" : "source"} (${victim}): every row arrives once`, async () => {
      const names = oneShard(`rw${victim}_`, ACCOUNTS);
      const shard = shardOf(names[0]!);
      const peer = accountOn("n3", `zz${victim}_`); // sorts after the names: their conversation is numbered by the shard
      expect(names.every((a) => homeOf(a) === "n1")).toBe(true);
      const keys = [];
      for (const a of names) keys.push(await device(a));
      for (const a of names) nodes.get("n1")!.addUser(a); // one more enrollment code each
      const kp = await device(peer);
      // The first account: a key bundle with 40 one-time prekeys, 39 contacts, 20 records kept (no confirmation).
      const dir = mkdtempSync(join(tmpdir(), "sb-move-rows-"));
      const c0 = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get("n1")!.tcp, key: keys[0]!, confirmSent: false });
      t.clients.push(c0);
      const sec = await SecureClient.open(c0, { statePath: join(dir, "k.e2e"), otkTarget: 40 });
      await c0.connect();
      await sec.whenPublished();
      await c0.request("contacts.add", { u: names.slice(1) });
      for (let k = 0; k < 20; k++) await c0.send(peer, `r${k}`);
      await c0.close();
      // Three messages queued for each other account's offline device (about 120 chunks of items: a longer move,
      // so that the kill falls inside it more often).
      const cp = await client(kp, "n3");
      for (let k = 0; k < 3; k++) for (const a of names.slice(1)) await cp.send(a, `${k} for ${a}`.padEnd(800, "."));
      const before = shardRows(nodes.get("n1")!, names);
      for (const [k, n] of Object.entries({ accounts: ACCOUNTS, devices: ACCOUNTS, codes: ACCOUNTS, seqs: 1, identities: 1, otks: 40, contacts: ACCOUNTS - 1, items: 3 * (ACCOUNTS - 1), records: 20 })) {
        expect([k, before[k]!.length >= n]).toEqual([k, true]);
      }
      const move = moveTo(nodes.get("n1")!, shard, "n2");
      await Bun.sleep(Math.floor(rand() * 40));
      let during = "a seeded 0-40 ms into the move";
      if (victim === "n2") {
        // Stopped first: if the move is not over, a chunk of it is then in flight to n2, unacked, so the kill falls
        // between two chunks for certain (the seeded delay picks which).
        nodes.get("n2")!.proc.kill("SIGSTOP");
        const over = await Promise.race([move.then(() => true), Bun.sleep(300).then(() => false)]);
        if (!over) await waitFor(async () => (await nodes.get("n1")!.metric("switchboard_cluster_link_lag_batches", `{peer="n2"}`)) > 0, "a chunk in flight to the stopped n2", 30_000);
        during = over ? "after the move" : "mid-shipment";
      }
      await nodes.get(victim)!.kill9();
      await nodes.get(victim)!.restart();
      const first = await move;
      await waitFor(async () => {
        const st = await Promise.all([...nodes.values()].map(status));
        return st.reduce((n, x) => n + x.held, 0) === 4096 && st.every((x) => x.unowned === 0);
      }, "every shard held by one live node", 60_000);
      const again = await moveTo(nodes.get("n1")!, shard, "n2"); // still n1's (the kill came before the flip): moved now
      expect(again.ok === true || again.reason === "not_owner").toBe(true);
      if (again.ok === true) expect(again.chunks as number).toBeGreaterThan(9);
      console.log(`kill -9 of ${victim} (${during}): the move answered ${JSON.stringify(first)}, then ${JSON.stringify(again)}`);
      // Every row the source had, on the new home, once (the leftovers step deletes the source's after the flip).
      await waitFor(() => JSON.stringify(shardRows(nodes.get("n2")!, names)) === JSON.stringify(before), "every row on n2", 30_000).catch(() => {});
      const after = shardRows(nodes.get("n2")!, names);
      const diff = (k: string) => ({ table: k, missing: before[k]!.filter((r) => !after[k]!.includes(r)).map((r) => r.slice(0, 120)), extra: after[k]!.length - before[k]!.length });
      for (const k of Object.keys(before)) expect(diff(k)).toEqual({ table: k, missing: [], extra: 0 });
      const got: string[] = [];
      const last = names[ACCOUNTS - 1]!;
      await client(keys[ACCOUNTS - 1]!, "n1", (c) => c.on("message", (m) => void got.push(text(m.payload))));
      await waitFor(() => got.length >= 3, "the queued messages from the new home", 30_000);
      await Bun.sleep(500); // a duplicate would arrive right behind
      expect(got).toEqual([0, 1, 2].map((k) => `${k} for ${last}`.padEnd(800, ".")));
      rmSync(dir, { recursive: true, force: true });
    }, 240_000);
  }
});
