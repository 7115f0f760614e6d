/**
 * Tickets (src/core/tickets.ts) with a real accounts.db: which ticket a passed resume hands back. The presented one
 * while it is of the current key and more than half its lifetime remains (no HMAC, no randomness for a fresh one);
 * a fresh one otherwise. Times are the `now` arguments, not the clock: nothing here waits.
 */
import { describe, expect, test } from "bun:test";
import { createHmac, randomBytes } from "node:crypto";
import { Tickets, SKEW_MS, type IssuedTicket } from "../../src/core/tickets.ts";
import { resumeTranscript } from "../../src/protocol/auth.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const LIFETIME = 3_600_000;
const pk = new Uint8Array(randomBytes(32));

function proof(sid: string, t: IssuedTicket, ts: number): Uint8Array {
  return new Uint8Array(createHmac("sha256", t.tks).update(resumeTranscript(sid, "ann", 1, ts)).digest());
}

describe("a passed resume hands back its own ticket while it is fresh", () => {
  const fresh = tempDirs("sb-tickets-");

  test("the same ticket within the first half of its life, of the current key; a fresh one after, and after a rotation", () => {
    const store = new SqliteAccountStore(fresh());
    const t0 = Date.now();
    const tickets = new Tickets(store, store.serverId(), LIFETIME, t0 - 1);
    const sid = store.serverId();
    const t = tickets.issue("ann", 1, pk, t0);
    // Early in its life: the ticket itself comes back, bytes and expiry as issued.
    let now = t0 + 1000;
    let r = tickets.check("ann", 1, pk, t.tk, now, proof(sid, t, now), now);
    expect(r).toEqual({ again: { tk: t.tk, tks: t.tks, tke: t.tke } });
    // Past half of its lifetime: still accepted, but the server issues a fresh one.
    now = t.tke - LIFETIME / 2 + SKEW_MS;
    r = tickets.check("ann", 1, pk, t.tk, now, proof(sid, t, now), now);
    expect(r).toEqual({ again: null });
    // A fresh ticket is of the current key; after a rotation (the sweep at one lifetime) it is of the previous
    // key: accepted until it expires, never handed back (its key goes before a handed-back one would expire).
    const u = tickets.issue("ann", 1, pk, now);
    now += 1;
    expect(tickets.check("ann", 1, pk, u.tk, now, proof(sid, u, now), now)).toEqual({ again: { tk: u.tk, tks: u.tks, tke: u.tke } });
    const rotated = t0 + LIFETIME + 1;
    tickets.sweep(rotated);
    r = tickets.check("ann", 1, pk, u.tk, rotated, proof(sid, u, rotated), rotated);
    expect(r).toEqual({ again: null });
    // A refusal is still a refusal (a replayed proof).
    expect(tickets.check("ann", 1, pk, u.tk, rotated, proof(sid, u, rotated), rotated)).toMatchObject({ counts: false });
    store.close();
  });
});
