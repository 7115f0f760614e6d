/**
 * Tickets (src/core/tickets.ts) with a real accounts.db: which ticket a passed resume hands back. The presented one
 * while it is of the current key and more than half its lifetime remains (no HMAC, no randomness for a fresh one);
 * a fresh one otherwise. Times are the `now` arguments, not the clock: nothing here waits.
 */
import { describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { Tickets, SKEW_MS, type IssuedTicket } from "../../src/core/tickets.ts";
import { resumeTranscript, ticketSecretInput } from "../../src/protocol/auth.ts";

const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { Directory } from "../../src/core/directory.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const LIFETIME = 3_600_000;

function proof(sid: string, t: IssuedTicket, ts: number): Uint8Array {
  return new Uint8Array(createHmac("sha256", t.tks).update(resumeTranscript(sid, "ann", 1, ts)).digest());
}

describe("a passed resume hands back its own ticket while it is fresh", () => {
  const fresh = tempDirs("sb-tickets-");

  test("the same ticket within the first half of its life, of the current key; a fresh one after, and after a rotation", () => {
    const store = new SqliteAccountStore(fresh());
    const t0 = Date.now();
    const tickets = new Tickets(store, new Directory(store, 10), store.serverId(), LIFETIME, t0 - 1);
    const sid = store.serverId();
    const t = tickets.issue("ann", 1, t0);
    // Early in its life: the ticket itself comes back, bytes and expiry as issued.
    let now = t0 + 1000;
    let r = tickets.check("ann", 1, t.tk, now, proof(sid, t, now), now);
    expect(r).toEqual({ again: { tk: t.tk, tks: t.tks, tke: t.tke } });
    // Past half of its lifetime: still accepted, but the server issues a fresh one.
    now = t.tke - LIFETIME / 2 + SKEW_MS;
    r = tickets.check("ann", 1, t.tk, now, proof(sid, t, now), now);
    expect(r).toEqual({ again: null });
    // A fresh ticket is of the current key; after a rotation (the sweep at one lifetime) it is of the previous
    // key: accepted until it expires, never handed back (its key goes before a handed-back one would expire).
    const u = tickets.issue("ann", 1, now);
    now += 1;
    expect(tickets.check("ann", 1, u.tk, now, proof(sid, u, now), now)).toEqual({ again: { tk: u.tk, tks: u.tks, tke: u.tke } });
    const rotated = t0 + LIFETIME + 1;
    tickets.sweep(rotated);
    r = tickets.check("ann", 1, u.tk, rotated, proof(sid, u, rotated), rotated);
    expect(r).toEqual({ again: null });
    // A refusal is still a refusal (a replayed proof).
    expect(tickets.check("ann", 1, u.tk, rotated, proof(sid, u, rotated), rotated)).toMatchObject({ counts: false });
    store.close();
  });
});

describe("a shard's ticket keys and replay record move with it (shardRows)", () => {
  const fresh = tempDirs("sb-tickets-move-");

  test("the new home verifies the old home's ticket, after its own restart too; a replay and another shard's ticket are refused", () => {
    const [a, b] = [new SqliteAccountStore(fresh()), new SqliteAccountStore(fresh())];
    const t0 = Date.now();
    const old = new Tickets(a, new Directory(a, 10), a.serverId(), LIFETIME, t0 - 1);
    const t = old.issue("ann", 1, t0);
    const bob = old.issue("bob", 1, t0); // another account: almost surely another shard (checked below)
    const now = t0 + 1000;
    expect(old.check("ann", 1, t.tk, now, proof(a.serverId(), t, now), now)).toMatchObject({ again: expect.anything() });
    const out: Record<string, unknown> = {};
    old.shardRows({ op: "export", accounts: ["ann"], out, inShard: () => true, page: 0 });
    let home = new Tickets(b, new Directory(b, 10), b.serverId(), LIFETIME, t0 - 1);
    // Before the import: the old home's ticket is unknown here (this node's key of the same id does not verify it).
    expect(home.check("ann", 1, t.tk, now + 1, proof(a.serverId(), t, now + 1), now + 1)).toMatchObject({ reason: "the proof does not verify" });
    home = new Tickets(b, new Directory(b, 10), b.serverId(), LIFETIME, t0 - 1);
    home.shardRows({ op: "import", accounts: ["ann"], rows: out, inShard: () => true });
    // The proof the old home took is a replay here; a later one passes, and is not handed back (a fresh ticket of this node).
    expect(home.check("ann", 1, t.tk, now, proof(a.serverId(), t, now), now)).toMatchObject({ reason: expect.stringContaining("replay") });
    expect(home.check("ann", 1, t.tk, now + 2, proof(a.serverId(), t, now + 2), now + 2)).toEqual({ again: null });
    // The keys are durable: a restart of the new home still verifies the ticket (a proof later than the restart).
    const restarted = new Tickets(b, new Directory(b, 10), b.serverId(), LIFETIME, now + 5);
    expect(restarted.check("ann", 1, t.tk, now + 10, proof(a.serverId(), t, now + 10), now + 10)).toEqual({ again: null });
    // The keys are of ann's shard only: a ticket of an account of another shard (bob's, if it is one) is not verified.
    expect(shardOf("bob")).not.toBe(shardOf("ann"));
    const bobProof = new Uint8Array(createHmac("sha256", bob.tks).update(resumeTranscript(a.serverId(), "bob", 1, now + 11)).digest());
    expect(restarted.check("bob", 1, bob.tk, now + 11, bobProof, now + 11)).toMatchObject({ reason: "the proof does not verify" }); // no key of bob's shard here
    // What the move shipped is derived for ann's shard alone: it makes ann's ticket's secret, not bob's.
    const shipped = (out["core.tickets"] as { keys: { key: Uint8Array; sid: string }[] }).keys;
    const secretOf = (key: Uint8Array, u: string, tk: Uint8Array) => toHex(createHmac("sha256", key).update(ticketSecretInput(a.serverId(), u, 1, tk)).digest());
    expect(shipped.map((k) => secretOf(k.key, "ann", t.tk))).toContain(toHex(t.tks));
    expect(shipped.map((k) => secretOf(k.key, "bob", bob.tk))).not.toContain(toHex(bob.tks));
    a.close();
    b.close();
  });
});

describe("a ticket issued in the second its key was made", () => {
  const fresh = tempDirs("sb-tickets-floor-");

  test("is still taken after a restart with a shorter lifetime (its issue time is floored to the second)", () => {
    const store = new SqliteAccountStore(fresh());
    const sid = store.serverId();
    // The key is made at x.900 s and the ticket issued at x.950: its issue time reads x.000, before the key.
    const s0 = Math.floor(Date.now() / 1000) * 1000 - 5000 + 900;
    const t = new Tickets(store, new Directory(store, 10), sid, LIFETIME, s0).issue("ann", 1, s0 + 50);
    // Restarted with a one-second lifetime: the key is rotated to the previous one, whose tickets are still taken.
    const restarted = new Tickets(store, new Directory(store, 10), sid, 1000, s0 + 3000);
    const now = s0 + 3100;
    expect(restarted.check("ann", 1, t.tk, now, proof(sid, t, now), now)).toEqual({ again: null });
    store.close();
  });
});
