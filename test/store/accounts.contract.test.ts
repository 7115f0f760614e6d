/** The AccountStore contract; every backend runs it through its factory. */
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { generateDeviceKey } from "../../src/client/keys.ts";
import type { AccountStore } from "../../src/store/accounts.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { SqliteSeqStore } from "../../src/store/seqs.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const backends: { name: string; open: (dir: string) => AccountStore }[] = [{ name: "sqlite", open: (dir) => new SqliteAccountStore(dir) }];

for (const b of backends) {
  describe(`AccountStore contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-acct-");
    const pk = () => generateDeviceKey().publicKey;

    test("the server id is stable across reopen", () => {
      const dir = fresh();
      const a = b.open(dir);
      const id = a.serverId();
      a.close();
      const again = b.open(dir);
      expect(again.serverId()).toBe(id);
      again.close();
    });

    test("tombstones move with a shard: tombstonesAfter pages the reserved names, importRows keeps the later until, the name stays refused", () => {
      const [from, to] = [b.open(fresh()), b.open(fresh())];
      for (const n of ["gone-a", "gone-b", "gone-c", "kept"]) expect(from.createAccount(n, 60).ok).toBe(true);
      const until = Date.now() + 3_600_000;
      for (const n of ["gone-a", "gone-b", "gone-c"]) expect(from.deleteAccount(n, until).ok).toBe(true);
      expect(from.deleteAccount("kept", Date.now() - 1).ok).toBe(true); // its reservation is over: not shipped
      expect(from.tombstonesAfter("", 2).map((t) => t.name)).toEqual(["gone-a", "gone-b"]);
      expect(from.tombstonesAfter("gone-b", 2).map((t) => t.name)).toEqual(["gone-c"]);
      expect(from.exportRows(["gone-b", "kept"]).tombstones.map((t) => t.name)).toEqual(["gone-b"]);
      const rows = { accounts: [], devices: [], codes: [], seqs: [], tombstones: from.tombstonesAfter("", 10) };
      to.importRows(rows);
      to.importRows({ ...rows, tombstones: rows.tombstones.map((t) => ({ ...t, until: t.until - 1000 })) }); // an older copy: the later until stays
      expect(to.tombstone("gone-a")?.until).toBe(until);
      const again = to.createAccount("gone-c", 60);
      expect(again.ok).toBe(false);
      if (!again.ok) expect(again.message).toContain("reserved");
      expect(to.loginChanges(0, "gone-a").deleted.map((d) => d.account)).toEqual(["gone-a"]);
      expect(to.createAccount("kept", 60).ok).toBe(true);
      from.close();
      to.close();
    });

    test("exportRows / importRows (shard moves): accounts, devices (revoked too), codes and the picked seq bounds arrive; a bound only grows", () => {
      const [from, to] = [b.open(fresh()), b.open(fresh())];
      const { code } = from.createAccount("mover", 60).ok ? (from.newEnrollCode("mover", 60) as { ok: true; value: { code: string } }).value : { code: "" };
      const k1 = pk();
      expect(from.enroll("mover", code, k1, "one", 8).ok).toBe(true);
      expect(from.addDevice("mover", pk(), "two", 8).ok).toBe(true);
      expect(from.revokeDevice("mover", 2).ok).toBe(true);
      from.newEnrollCode("mover", 60);
      expect(from.createAccount("stays", 60).ok).toBe(true);
      const seqs = new SqliteSeqStore((from as SqliteAccountStore).db);
      seqs.reserveSeq("mover\u0000zed", 300);
      seqs.reserveSeq("alpha\u0000mover", 7);
      const rows = from.exportRows(["mover"], (c) => c.startsWith("mover"));
      expect(rows.seqs).toEqual([{ conv: "mover\u0000zed", hi: 300 }]);
      const toSeqs = new SqliteSeqStore((to as SqliteAccountStore).db);
      toSeqs.reserveSeq("mover\u0000zed", 500); // a higher bound here stays
      to.importRows(rows);
      to.importRows(rows); // again (a resent shipment): nothing doubles
      expect(to.accountExists("mover")).toBe(true);
      expect(to.accountExists("stays")).toBe(false);
      expect(to.devices("mover").map((d) => [d.device, d.revoked !== null])).toEqual([[1, false], [2, true]]);
      expect(Buffer.from(to.device("mover", 1)!.pk).equals(Buffer.from(k1))).toBe(true);
      expect(toSeqs.reserveSeq("mover\u0000zed", 0)).toBe(500);
      const r2 = from.exportRows(["mover"], () => true);
      expect(r2.codes.length).toBe(1);
      // Moved away and back: dropRows leaves nothing of the account; an import replaces what a stale copy had.
      from.dropRows(["mover"]);
      expect(from.accountExists("mover")).toBe(false);
      expect(from.devices("mover")).toEqual([]);
      expect(from.accountExists("stays")).toBe(true);
      expect(to.revokeDevice("mover", 1).ok).toBe(true);
      from.importRows(to.exportRows(["mover"], () => false));
      expect(from.devices("mover").map((d) => [d.device, d.revoked !== null])).toEqual([[1, true], [2, true]]);
      from.importRows({ ...to.exportRows(["mover"], () => false), devices: [] });
      expect(from.devices("mover")).toEqual([]); // replaced, not merged
      to.close();
      const t2 = b.open(fresh());
      t2.importRows({ ...rows, seqs: [{ conv: "mover\u0000zed", hi: 300 }] });
      expect(new SqliteSeqStore((t2 as SqliteAccountStore).db).reserveSeq("mover\u0000zed", 1)).toBe(301);
      t2.close();
      from.close();
    });

    test("seqsAfter pages every sequence bound in key order; exportRows without a picker reads none", () => {
      const st = b.open(fresh());
      const seqs = new SqliteSeqStore((st as SqliteAccountStore).db);
      const convs = Array.from({ length: 25 }, (_, i) => `a${String(i).padStart(2, "0")}\u0000z`).concat(["#g1", "b\u0000c"]);
      for (const c of convs) seqs.reserveSeq(c, 10);
      const got: string[] = [];
      for (let after = ""; ; ) {
        const page = st.seqsAfter(after, 10);
        got.push(...page.map((r) => r.conv));
        for (const r of page) expect(r.hi).toBeGreaterThanOrEqual(10);
        if (page.length < 10) break;
        after = page[page.length - 1]!.conv;
      }
      expect(got).toEqual([...convs].sort());
      expect(st.exportRows([]).seqs).toEqual([]);
      st.close();
    });

    test("accounts: names are checked, duplicates refused", () => {
      const s = b.open(fresh());
      expect(s.createAccount("alice", 60).ok).toBe(true);
      const dup = s.createAccount("alice", 60);
      expect(dup.ok).toBe(false);
      expect(s.createAccount("Bad Name", 60)).toMatchObject({ ok: false, reason: "bad_field" });
      expect(s.accountExists("alice")).toBe(true);
      expect(s.accountExists("nobody")).toBe(false);
      s.close();
    });

    test("enrollment codes are one-time, tolerant of case and dashes, and never stored in plain text", () => {
      const dir = fresh();
      const s = b.open(dir);
      const r = s.createAccount("bob", 60);
      if (!r.ok) throw new Error(r.message);
      const code = r.value.code;
      expect(s.enroll("bob", "wrong-code", pk(), "x", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      const e = s.enroll("bob", code.toUpperCase().replace(/-/g, " "), pk(), "phone", 8);
      expect(e).toMatchObject({ ok: true, value: { device: 1 } });
      expect(s.enroll("bob", code, pk(), "again", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      s.close();
      // The code must not appear in any file of the data directory.
      for (const f of readdirSync(dir)) {
        const bytes = readFileSync(join(dir, f));
        expect(bytes.includes(Buffer.from(code))).toBe(false);
        expect(bytes.includes(Buffer.from(code.replace(/-/g, "")))).toBe(false);
      }
    });

    test("a code of one account does not enroll another; expired codes fail", async () => {
      const s = b.open(fresh());
      const a = s.createAccount("carol", 60);
      s.createAccount("dave", 60);
      if (!a.ok) throw new Error(a.message);
      expect(s.enroll("dave", a.value.code, pk(), "x", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      const short = s.newEnrollCode("carol", 0);
      if (!short.ok) throw new Error(short.message);
      await Bun.sleep(5);
      expect(s.enroll("carol", short.value.code, pk(), "x", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      s.close();
    });

    test("a new code for an account replaces its earlier ones", () => {
      const s = b.open(fresh());
      const first = s.createAccount("frank", 60);
      if (!first.ok) throw new Error(first.message);
      const second = s.newEnrollCode("frank", 60);
      if (!second.ok) throw new Error(second.message);
      const other = s.createAccount("gina", 60); // another account's code is not touched
      if (!other.ok) throw new Error(other.message);
      expect(s.newEnrollCode("frank", 60).ok).toBe(true);
      expect(s.enroll("frank", first.value.code, pk(), "x", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      expect(s.enroll("frank", second.value.code, pk(), "x", 8)).toMatchObject({ ok: false, reason: "bad_code" });
      expect(s.enroll("gina", other.value.code, pk(), "x", 8)).toMatchObject({ ok: true });
      s.close();
    });

    test("devices: ids are never reused, the cap counts active devices, keys are unique, revocation sticks", () => {
      const s = b.open(fresh());
      s.createAccount("erin", 60);
      const k1 = pk();
      expect(s.addDevice("erin", k1, "one", 2)).toMatchObject({ ok: true, value: { device: 1 } });
      expect(s.addDevice("erin", k1, "dup key", 2)).toMatchObject({ ok: false, reason: "key_in_use" });
      expect(s.addDevice("erin", pk(), "two", 2)).toMatchObject({ ok: true, value: { device: 2 } });
      expect(s.addDevice("erin", pk(), "three", 2)).toMatchObject({ ok: false, reason: "too_many_devices" });
      expect(s.revokeDevice("erin", 1).ok).toBe(true);
      expect(s.revokeDevice("erin", 1)).toMatchObject({ ok: false, reason: "unknown_device" });
      expect(s.addDevice("erin", pk(), "three", 2)).toMatchObject({ ok: true, value: { device: 3 } });
      expect(s.addDevice("erin", k1, "revived", 3)).toMatchObject({ ok: false, reason: "key_in_use" });
      expect(s.device("erin", 1)?.revoked).not.toBeNull();
      expect(s.devices("erin").map((d) => [d.device, d.revoked === null])).toEqual([[1, false], [2, true], [3, true]]);
      expect(Buffer.from(s.device("erin", 2)!.pk).length).toBe(32);
      expect(s.addDevice("nobody", pk(), "x", 8)).toMatchObject({ ok: false, reason: "unknown_user" });
      s.close();
    });

    test("key versions: 0 until set, set only on active devices, kept across reopen, checked", () => {
      const dir = fresh();
      const s = b.open(dir);
      s.createAccount("kim", 60);
      s.addDevice("kim", pk(), "one", 8);
      s.addDevice("kim", pk(), "two", 8);
      expect(s.device("kim", 1)?.kv).toBe(0);
      expect(s.setKeyVersion("kim", 1, 0xdeadbeef)).toBe(true);
      expect(s.setKeyVersion("kim", 9, 5)).toBe(false);
      s.revokeDevice("kim", 2);
      expect(s.setKeyVersion("kim", 2, 5)).toBe(false);
      expect(() => s.setKeyVersion("kim", 1, -1)).toThrow(/0\.\.2\^32-1/);
      s.close();
      const again = b.open(dir);
      expect(again.devices("kim").map((d) => d.kv)).toEqual([0xdeadbeef, 0]);
      again.close();
    });

    // Operator controls (issue 17: `switchboard user disable|enable|delete`).
    test("disable and enable: a flag that reports whether it changed; unknown accounts are refused", () => {
      const s = b.open(fresh());
      s.createAccount("ida", 60);
      expect(s.isDisabled("ida")).toBe(false);
      expect(s.setDisabled("ida", true)).toEqual({ ok: true, value: { changed: true } });
      expect(s.setDisabled("ida", true)).toEqual({ ok: true, value: { changed: false } });
      expect(s.isDisabled("ida")).toBe(true);
      expect(s.accountSummaries()).toMatchObject([{ name: "ida", devices: 0, disabled: true }]);
      expect(s.setDisabled("ida", false)).toEqual({ ok: true, value: { changed: true } });
      expect(s.isDisabled("ida")).toBe(false);
      expect(s.setDisabled("nobody", true)).toMatchObject({ ok: false, reason: "unknown_user" });
      s.close();
    });

    test("loginKey: the active device's key and the disabled flag in one read; revoke and disable show at once", () => {
      const s = b.open(fresh());
      s.createAccount("lee", 60);
      const k1 = pk();
      s.addDevice("lee", k1, "one", 8);
      expect(s.loginKey("lee", 1)).toEqual({ pk: k1, disabled: false });
      s.setDisabled("lee", true);
      expect(s.loginKey("lee", 1)).toEqual({ pk: k1, disabled: true });
      s.setDisabled("lee", false);
      expect(s.loginKey("lee", 1)).toEqual({ pk: k1, disabled: false });
      s.revokeDevice("lee", 1);
      expect(s.loginKey("lee", 1)).toEqual({ pk: null, disabled: false });
      expect(s.loginKey("lee", 2)).toEqual({ pk: null, disabled: false });
      expect(s.loginKey("nobody", 1)).toEqual({ pk: null, disabled: false });
      s.close();
    });

    test("loginChanges: disabled accounts, revokes and deletions at or after `since`, of all or of one account, after reopen too", () => {
      const dir = fresh();
      let s = b.open(dir);
      for (const n of ["ann", "bo", "cy", "dee"]) {
        const c = s.createAccount(n, 60);
        if (!c.ok) throw new Error(c.message);
        expect(s.enroll(n, c.value.code, pk(), "phone", 5).ok).toBe(true);
        expect(s.addDevice(n, pk(), "laptop", 5).ok).toBe(true);
      }
      const t0 = Date.now();
      const r = s.revokeDevice("ann", 2);
      if (!r.ok) throw new Error(r.message);
      s.setDisabled("bo", true);
      s.setDisabled("dee", true);
      s.setDisabled("dee", false);
      expect(s.deleteAccount("cy", Date.now() + 60_000).ok).toBe(true);
      const del = s.tombstone("cy")!.deleted;
      s.close();
      s = b.open(dir);
      const all = s.loginChanges(t0);
      expect(all.disabled).toEqual(["bo"]);
      expect(all.revoked).toEqual([{ account: "ann", device: 2, at: r.value.revoked }]);
      expect(all.deleted).toEqual([{ account: "cy", at: del }]);
      // Only the changes from `since` on (a disable is a state: it is listed whenever it was made).
      expect(s.loginChanges(Math.max(r.value.revoked, del) + 1)).toEqual({ disabled: ["bo"], revoked: [], deleted: [] });
      expect(s.loginChanges(t0, "ann")).toEqual({ disabled: [], revoked: [{ account: "ann", device: 2, at: r.value.revoked }], deleted: [] });
      expect(s.loginChanges(t0, "bo")).toEqual({ disabled: ["bo"], revoked: [], deleted: [] });
      expect(s.loginChanges(t0, "cy")).toEqual({ disabled: [], revoked: [], deleted: [{ account: "cy", at: del }] });
      s.close();
    });

    test("delete: devices and codes go, the name stays reserved until the given time, then may be taken again", () => {
      const dir = fresh();
      let s = b.open(dir);
      const code = s.createAccount("jo", 60);
      if (!code.ok) throw new Error(code.message);
      expect(s.enroll("jo", code.value.code, pk(), "phone", 5)).toMatchObject({ ok: true, value: { device: 1 } });
      expect(s.addDevice("jo", pk(), "laptop", 5).ok).toBe(true);
      s.revokeDevice("jo", 2);
      s.createAccount("kim", 60);
      expect(s.accountSummaries().find((a) => a.name === "jo")).toMatchObject({ devices: 1 });

      expect(s.deleteAccount("jo", Date.now() + 60_000)).toEqual({ ok: true, value: { devices: [1, 2] } });
      expect(s.accountExists("jo")).toBe(false);
      expect(s.devices("jo")).toEqual([]);
      expect(s.accountSummaries().map((a) => a.name)).toEqual(["kim"]);
      expect(s.tombstone("jo")).toMatchObject({ until: expect.any(Number) });
      const again = s.createAccount("jo", 60);
      expect(again).toMatchObject({ ok: false, reason: "forbidden" });
      expect(!again.ok && again.message).toContain("its name is reserved until");
      expect(s.deleteAccount("jo", Date.now() + 60_000)).toMatchObject({ ok: false, reason: "unknown_user" });
      s.close();
      s = b.open(dir); // the reservation is in the file, for the CLI's `user add` too
      expect(s.createAccount("jo", 60).ok).toBe(false);
      s.close();

      // A reservation that has run out lets the name be taken again, with nothing of the old account.
      s = b.open(fresh());
      s.createAccount("lee", 60);
      expect(s.deleteAccount("lee", Date.now() - 1).ok).toBe(true);
      expect(s.tombstone("lee")).toBeNull();
      expect(s.createAccount("lee", 60).ok).toBe(true);
      expect(s.devices("lee")).toEqual([]);
      s.close();
    });

    test("ticket keys: made on first use, kept across reopen, rotated at the period to current + previous, never more", () => {
      const dir = fresh();
      let s = b.open(dir);
      const t0 = 1_000_000;
      const first = s.ticketKeys(t0, 1000);
      expect(first.length).toBe(1);
      expect(first[0]!.key.length).toBe(32);
      expect(s.ticketKeys(t0 + 999, 1000)).toEqual(first); // not due: the same key
      s.close();
      s = b.open(dir); // in the file: a restart MACs and checks with the same keys
      expect(s.ticketKeys(t0 + 500, 1000)).toEqual(first);
      const second = s.ticketKeys(t0 + 1000, 1000);
      expect(second.map((k) => k.id)).toEqual([first[0]!.id + 1, first[0]!.id]);
      expect(second[1]).toEqual(first[0]!);
      expect(Buffer.from(second[0]!.key).equals(Buffer.from(first[0]!.key))).toBe(false);
      const third = s.ticketKeys(t0 + 2000, 1000);
      expect(third.map((k) => k.id)).toEqual([first[0]!.id + 2, first[0]!.id + 1]); // the oldest is gone
      s.close();
    });

    test("moved ticket keys (a shard move, core/tickets.ts): none at first, replaced whole, kept across reopen, own keys untouched", () => {
      const dir = fresh();
      let s = b.open(dir);
      expect(s.movedTicketKeys()).toEqual([]);
      const own = s.ticketKeys(1_000_000, 1000);
      const k = (shard: number, id: number) => ({ shard, sid: "sb-other", id, key: new Uint8Array(32).fill(id), expires: 5_000_000 + shard });
      s.putMovedTicketKeys([k(7, 1), k(7, 2), k(9, 1)]);
      s.close();
      s = b.open(dir);
      expect(s.movedTicketKeys()).toEqual([k(7, 1), k(7, 2), k(9, 1)]);
      s.putMovedTicketKeys([k(9, 1)]);
      expect(s.movedTicketKeys()).toEqual([k(9, 1)]);
      expect(s.ticketKeys(1_000_500, 1000)).toEqual(own);
      s.close();
    });
  });
}

describe("SqliteAccountStore (SQLite-specific)", () => {
  const fresh = tempDirs("sb-acct-cache-");
  test("accounts.db keeps a 256 KiB page cache, not SQLite's 2 MiB (what a login storm would leave resident)", () => {
    const s = new SqliteAccountStore(fresh());
    try {
      expect((s.db.query("PRAGMA cache_size").get() as { cache_size: number }).cache_size).toBe(-256);
    } finally {
      s.close();
    }
  });
});
