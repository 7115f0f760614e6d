/**
 * The KeyStore contract. Every backend runs this suite by passing a factory
 * for itself (Hono's common.case.test); today there is one, SQLite.
 * Signatures are the keys module's business, so the keys here are random bytes.
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { KEYS_SCHEMA, SqliteKeyStore, type DeviceKeys, type KeyStore, type OneTimePrekey } from "../../src/modules/keys/store.ts";
import { openVersioned } from "../../src/store/schema.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

interface Backend {
  name: string;
  /** Opens (or reopens, with the same `dir`) a store. */
  open(dir: string): KeyStore;
}

// Opened as ctx.database opens a module's file: keys.db, migrated to the module's schema.
const backends: Backend[] = [{ name: "sqlite", open: (dir) => new SqliteKeyStore(openVersioned(join(dir, "keys.db"), "process", KEYS_SCHEMA)) }];

const rnd = (n: number) => new Uint8Array(randomBytes(n));
let kvN = 1;
function identity(spkId = 1): DeviceKeys {
  return { ik: rnd(32), dh: rnd(32), dhs: rnd(64), kv: kvN++, spk: { id: spkId, k: rnd(32), s: rnd(64) } };
}
const otks = (from: number, n: number): OneTimePrekey[] => Array.from({ length: n }, (_, i) => ({ id: from + i, k: rnd(32) }));
const LIMITS = { maxOtk: 20, lowOtk: 3 };

for (const b of backends) {
  describe(`KeyStore contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-keys-");

    test("nothing before the first publish; a publish is read back exactly, and survives a reopen", () => {
      const dir = fresh();
      let s = b.open(dir);
      expect(s.get("alice", 1)).toBeNull();
      expect(s.count("alice", 1)).toBe(0);
      const id = identity();
      const five = otks(10, 5);
      expect(s.publish("alice", 1, id, five, LIMITS)).toEqual({ ok: true, value: { changed: true, n: 5, added: 5 } });
      s.close();
      s = b.open(dir);
      const got = s.get("alice", 1)!;
      expect(Buffer.from(got.ik).equals(id.ik) && Buffer.from(got.dh).equals(id.dh) && Buffer.from(got.dhs).equals(id.dhs)).toBe(true);
      expect(got.kv).toBe(id.kv);
      expect(got.spk.id).toBe(1);
      expect(Buffer.from(got.spk.k).equals(id.spk.k) && Buffer.from(got.spk.s).equals(id.spk.s)).toBe(true);
      expect(s.count("alice", 1)).toBe(5);
      expect(s.get("alice", 2)).toBeNull(); // per device
      s.close();
    });

    test("take hands out one-time prekeys lowest id first, each once, and then the signed prekey alone", () => {
      const s = b.open(fresh());
      const keys = otks(7, 3);
      s.publish("bob", 1, identity(), [keys[2]!, keys[0]!, keys[1]!], LIMITS);
      const taken: number[] = [];
      for (let i = 0; i < 3; i++) {
        const r = s.take("bob", [1], 0);
        expect(r.bundles).toHaveLength(1);
        const o = r.bundles[0]!.otk!;
        taken.push(o.id);
        expect(Buffer.from(o.k).equals(keys.find((k) => k.id === o.id)!.k)).toBe(true);
      }
      expect(taken).toEqual([7, 8, 9]);
      const last = s.take("bob", [1], 0).bundles[0]!;
      expect(last.otk).toBeUndefined();
      expect(last.spk.id).toBe(1);
      expect(last.device).toBe(1);
      expect(s.count("bob", 1)).toBe(0);
      s.close();
    });

    test("take covers several devices in one call, leaves out those without keys, keeps the order asked", () => {
      const s = b.open(fresh());
      s.publish("carol", 1, identity(), otks(1, 2), LIMITS);
      s.publish("carol", 3, identity(), [], LIMITS);
      const r = s.take("carol", [3, 2, 1], 0);
      expect(r.bundles.map((x) => x.device)).toEqual([3, 1]);
      expect(r.bundles[0]!.otk).toBeUndefined();
      expect(r.bundles[1]!.otk!.id).toBe(1);
      expect(s.count("carol", 1)).toBe(1);
      s.close();
    });

    test("a new identity drops the old signed prekey and one-time prekeys; the same identity keeps them", () => {
      const s = b.open(fresh());
      const a = identity(1);
      s.publish("dan", 1, a, otks(1, 4), LIMITS);
      // Same ik and dh, new signed prekey, more one-time prekeys: appended.
      const again = { ...a, spk: { id: 2, k: rnd(32), s: rnd(64) } };
      expect(s.publish("dan", 1, again, otks(5, 2), LIMITS)).toEqual({ ok: true, value: { changed: false, n: 6, added: 2 } });
      expect(s.get("dan", 1)!.spk.id).toBe(2);
      const next = identity(1);
      expect(s.publish("dan", 1, next, otks(100, 1), LIMITS)).toEqual({ ok: true, value: { changed: true, n: 1, added: 1 } });
      expect(s.get("dan", 1)!.kv).toBe(next.kv);
      expect(s.take("dan", [1], 0).bundles[0]!.otk!.id).toBe(100);
      s.close();
    });

    test("one-time prekey ids: an exact resend is skipped, a clash or a repeat refuses the whole batch", () => {
      const s = b.open(fresh());
      const first = otks(1, 3);
      s.publish("eve", 1, identity(), first, LIMITS);
      expect(s.addPrekeys("eve", 1, [first[0]!, ...otks(4, 2)], LIMITS)).toEqual({ ok: true, value: { n: 5, added: 2 } });
      const clash = s.addPrekeys("eve", 1, [{ id: 6, k: rnd(32) }, { id: 2, k: rnd(32) }], LIMITS);
      expect(clash).toMatchObject({ ok: false, reason: "bad_field" });
      const twice = s.addPrekeys("eve", 1, [{ id: 7, k: rnd(32) }, { id: 7, k: rnd(32) }], LIMITS);
      expect(twice).toMatchObject({ ok: false, reason: "bad_field" });
      expect(s.count("eve", 1)).toBe(5); // id 6 of the clashing batch was not stored
      s.close();
    });

    test("the per-device cap refuses a batch whole, counting only new keys; room comes back as keys are taken", () => {
      const s = b.open(fresh());
      const have = otks(1, 18);
      s.publish("fay", 1, identity(), have, LIMITS);
      const over = s.addPrekeys("fay", 1, otks(100, 3), LIMITS);
      expect(over).toMatchObject({ ok: false, reason: "too_many_keys" });
      if (!over.ok) expect(over.message).toContain("room for 2");
      expect(s.count("fay", 1)).toBe(18);
      // Resends do not count towards the cap.
      expect(s.addPrekeys("fay", 1, [...have.slice(0, 5), ...otks(100, 2)], LIMITS)).toEqual({ ok: true, value: { n: 20, added: 2 } });
      s.take("fay", [1], 0);
      expect(s.addPrekeys("fay", 1, otks(200, 1), LIMITS)).toEqual({ ok: true, value: { n: 20, added: 1 } });
      // A publish over the cap changes nothing, not even the identity.
      const before = s.get("fay", 1)!;
      expect(s.publish("fay", 1, { ...before, spk: { id: 9, k: rnd(32), s: rnd(64) } }, otks(300, 1), LIMITS)).toMatchObject({ ok: false, reason: "too_many_keys" });
      expect(s.get("fay", 1)!.spk.id).toBe(before.spk.id);
      s.close();
    });

    test("uploads and rotations need a published identity", () => {
      const s = b.open(fresh());
      expect(s.addPrekeys("gus", 1, otks(1, 1), LIMITS)).toMatchObject({ ok: false, reason: "not_found" });
      expect(s.rotate("gus", 1, { id: 2, k: rnd(32), s: rnd(64) })).toMatchObject({ ok: false, reason: "not_found" });
      expect(s.count("gus", 1)).toBe(0);
      s.close();
    });

    test("rotation replaces the signed prekey; reusing the current id for another key is refused", () => {
      const s = b.open(fresh());
      const id = identity(5);
      s.publish("hal", 1, id, otks(1, 2), LIMITS);
      expect(s.rotate("hal", 1, { id: 5, k: rnd(32), s: rnd(64) })).toMatchObject({ ok: false, reason: "bad_field" });
      expect(s.rotate("hal", 1, id.spk)).toEqual({ ok: true, value: { n: 2 } }); // a resend of the current one
      const next = { id: 6, k: rnd(32), s: rnd(64) };
      expect(s.rotate("hal", 1, next).ok).toBe(true);
      const b1 = s.take("hal", [1], 0).bundles[0]!;
      expect(b1.spk.id).toBe(6);
      expect(Buffer.from(b1.spk.k).equals(next.k)).toBe(true);
      expect(b1.kv).toBe(id.kv); // the identity is untouched
      s.close();
    });

    test("low: reported once when a take leaves fewer than the threshold, again only after a refill reached it", () => {
      const dir = fresh();
      let s = b.open(dir);
      s.publish("ivy", 1, identity(), otks(1, 5), LIMITS); // lowOtk 3
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 4 left
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 3 left: not fewer than 3
      expect(s.take("ivy", [1], 3).low).toEqual([{ device: 1, n: 2 }]);
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 1 left: already reported
      s.close();
      s = b.open(dir); // the flag is durable: a restart does not repeat the notice
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 0 left
      expect(s.take("ivy", [1], 3).low).toEqual([]); // none to take
      s.addPrekeys("ivy", 1, otks(10, 2), LIMITS); // 2: still below, no reset
      expect(s.take("ivy", [1], 3).low).toEqual([]);
      s.addPrekeys("ivy", 1, otks(20, 4), LIMITS); // 5: back up
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 4
      expect(s.take("ivy", [1], 3).low).toEqual([]); // 3
      expect(s.take("ivy", [1], 3).low).toEqual([{ device: 1, n: 2 }]);
      s.close();
    });

    test("low: a new identity starts a new stock, reported afresh", () => {
      const s = b.open(fresh());
      s.publish("jon", 1, identity(), otks(1, 3), LIMITS);
      expect(s.take("jon", [1], 3).low).toEqual([{ device: 1, n: 2 }]);
      s.publish("jon", 1, identity(), otks(1, 2), LIMITS);
      expect(s.take("jon", [1], 3).low).toEqual([{ device: 1, n: 1 }]);
      s.close();
    });

    test("drop deletes a device's identity and one-time prekeys, and only that device's", () => {
      const s = b.open(fresh());
      s.publish("kim", 1, identity(), otks(1, 3), LIMITS);
      s.publish("kim", 2, identity(), otks(1, 3), LIMITS);
      s.publish("kit", 1, identity(), otks(1, 3), LIMITS);
      expect(s.drop("kim", 2)).toBe(true);
      expect(s.drop("kim", 2)).toBe(false);
      expect(s.get("kim", 2)).toBeNull();
      expect(s.count("kim", 2)).toBe(0);
      expect(s.take("kim", [1, 2], 0).bundles.map((x) => x.device)).toEqual([1]);
      expect(s.count("kit", 1)).toBe(3);
      s.close();
    });

    test("dropAccount deletes every device's keys of that account, and only that account's", () => {
      const s = b.open(fresh());
      s.publish("kim", 1, identity(), otks(1, 3), LIMITS);
      s.publish("kim", 2, identity(), otks(1, 3), LIMITS);
      s.publish("kit", 1, identity(), otks(1, 3), LIMITS);
      expect(s.dropAccount("kim")).toBe(2);
      expect(s.dropAccount("kim")).toBe(0);
      expect([s.get("kim", 1), s.get("kim", 2)]).toEqual([null, null]);
      expect([s.count("kim", 1), s.count("kim", 2), s.count("kit", 1)]).toEqual([0, 0, 3]);
      s.close();
    });

    test("two stores on the same file (two handles) never hand out the same one-time prekey", () => {
      // The server has one handle, but this is what makes `take` safe under any
      // interleaving: the delete and its read are one statement in one write transaction.
      const dir = fresh();
      const s1 = b.open(dir);
      const s2 = b.open(dir);
      s1.publish("lea", 1, identity(), otks(1, 20), { maxOtk: 100, lowOtk: 0 });
      const got: number[] = [];
      for (let i = 0; i < 12; i++) {
        const r = (i % 2 ? s1 : s2).take("lea", [1], 0).bundles[0]!;
        if (r.otk) got.push(r.otk.id);
      }
      expect(new Set(got).size).toBe(12);
      expect(s1.count("lea", 1)).toBe(8);
      s1.close();
      s2.close();
    });
  });
}
