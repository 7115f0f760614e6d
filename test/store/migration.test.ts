/**
 * Schema versions: today's server on a data directory written by the first
 * release (3337863). The directory is a committed fixture,
 * test/fixtures/data-3337863/, written by that release's own server (its
 * harness started it, its SDK enrolled the devices and queued messages for
 * the offline one) with tools/make-migration-fixture.ts, which says how; the
 * test copies it, today's server starts on the copy, migrates every file
 * (after a backup of each), and the offline device receives every queued
 * message. Module data the old server kept in accounts.db (a 1:1 read mark,
 * a last-seen time) is still there after the migration. A file of a newer
 * version, and a file that is not a database, stop the start with a message
 * naming the file.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, startServer, waitFor } from "../helpers/harness.ts";
import type { KeyFile } from "../../src/client/keys.ts";

const minute = (t: number) => Math.floor(t / 60_000) * 60_000;

setDefaultTimeout(120_000); // bounds on waiting for subprocesses, not timing assertions

const FIXTURE = join(import.meta.dir, "../fixtures/data-3337863");
const N = 25;

interface Fixture {
  alice: KeyFile;
  bob: KeyFile;
  carol: KeyFile;
  bodies: string[];
  carolReadMark: { peer: string; seq: number };
  carolLastSeen: number;
}

/**
 * The schema version today's server writes, by file: the queue shards are at
 * 2, accounts.db at 4 (step 2 handed module data over to messaging.db and
 * presence.db; 3: disabled accounts; 4: an index of codes by account), presence.db at 2 (contacts, blocks, privacy), every other file at 1.
 */
function current(path: string): number {
  if (path.endsWith("/accounts.db")) return 4; // 2: module data handed over; 3: disabled accounts, tombstones (issue 17); 4: codes by account
  if (path.includes("/queues/")) return 3; // 2: items carry their conversation; 3: the `unconfirmed` table (issue 20 target 5)
  if (path.endsWith("/push.db")) return 2; // 2: APNs VoIP tokens in a slot of their own
  return path.endsWith("/presence.db") ? 3 : 1; // presence 3: blocked_by (cluster: remote blocks at the blocked account's home)
}

/** Every SQLite file of a data directory but the lock. */
function dbFiles(dir: string): string[] {
  const top = readdirSync(dir).filter((f) => f.endsWith(".db") && f !== "lock.db").map((f) => join(dir, f));
  const q = existsSync(join(dir, "queues")) ? readdirSync(join(dir, "queues")).filter((f) => f.endsWith(".db")).map((f) => join(dir, "queues", f)) : [];
  return [...top, ...q];
}
function version(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  } finally {
    db.close();
  }
}

async function serveFails(dataDir: string): Promise<{ code: number; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "0", "--http-port", "0"], { stdout: "ignore", stderr: "pipe" });
  const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return { code, stderr };
}

describe("a data directory written by 3337863", () => {
  let work: string;
  let dataDir: string;
  let bob: KeyFile;
  let fixture: Fixture;
  const sent: string[] = [];

  beforeAll(() => {
    if (!existsSync(join(FIXTURE, "fixture.json"))) {
      throw new Error(`${FIXTURE} is missing: it is committed; regenerate it with tools/make-migration-fixture.ts (see its header)`);
    }
    work = mkdtempSync(join(tmpdir(), "sb-migrate-"));
    dataDir = join(work, "data");
    cpSync(FIXTURE, dataDir, { recursive: true, filter: (src) => !src.endsWith("fixture.json") });
    fixture = JSON.parse(readFileSync(join(FIXTURE, "fixture.json"), "utf8")) as Fixture;
    bob = fixture.bob;
    sent.push(...fixture.bodies);
    expect(sent.length).toBe(N);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  test("its files carry no version; today's server migrates each (a backup first) and delivers every queued message", async () => {
    const files = dbFiles(dataDir);
    expect(files.map((f) => f.slice(dataDir.length + 1)).filter((f) => !f.startsWith("queues/")).sort()).toEqual(["accounts.db", "groups.db", "keys.db"]);
    expect(files.some((f) => f.includes("/queues/"))).toBe(true);
    for (const f of files) expect({ f, v: version(f) }).toEqual({ f, v: 0 });

    const srv = await startServer({ dataDir });
    try {
      for (const f of dbFiles(dataDir)) {
        expect({ f, v: version(f) }).toEqual({ f, v: current(f) });
      }
      for (const f of files) expect({ f, backup: existsSync(`${f}.v0.bak`) }).toEqual({ f, backup: true });
      const got: string[] = [];
      const c = await srv.client(bob, { setup: (cl) => cl.on("message", (m) => got.push(new TextDecoder().decode(m.payload))) });
      await waitFor(() => got.length >= N, `${N} queued messages`);
      c.close();
      expect(got).toEqual(sent);
      // A backup is the file as it was: version 0, the messages still in it.
      const q = files.filter((f) => f.includes("/queues/"));
      let backedUp = 0;
      for (const f of q) {
        const db = new Database(`${f}.v0.bak`, { readonly: true });
        backedUp += (db.query("SELECT COUNT(*) AS n FROM items WHERE account = 'bob'").get() as { n: number }).n;
        expect((db.query("PRAGMA user_version").get() as { user_version: number }).user_version).toBe(0);
        db.close();
      }
      expect(backedUp).toBe(N);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    // A second start finds every file current: no new backup, nothing to do.
    for (const f of files) rmSync(`${f}.v0.bak`);
    const again = await startServer({ dataDir });
    await again.http_get("/healthz"); // its signal handlers are in place once it serves
    expect(await again.stop()).toBe(0);
    for (const f of files) expect({ f, backup: existsSync(`${f}.v0.bak`) }).toEqual({ f, backup: false });
  });

  test("module data the old server kept in accounts.db survives the migration: carol's last seen and her read mark", async () => {
    let seq = 0;
    const srv = await startServer({ dataDir });
    try {
      const a = await srv.client(fixture.alice);
      // Last seen is shown to whom carol's privacy allows (carol herself, here) and to the minute (docs/PROTOCOL.md §6.10).
      const own = await srv.client(fixture.carol);
      expect(await own.request("presence", { u: "carol" })).toEqual({ online: false, ls: minute(fixture.carolLastSeen) });
      await own.close();
      // The mark is forward-only: a read at or below the stored one tells no one. Alice's receipts come in
      // queue order, so if the old mark had been lost, the receipt for it would come before the new one.
      const reads: number[] = [];
      a.on("receipt", (r) => {
        if (r.kind === "read") reads.push(r.seq);
      });
      seq = (await a.send("carol", "after the upgrade")).seq;
      expect(seq).toBeGreaterThan(fixture.carolReadMark.seq);
      const c = await srv.client(fixture.carol);
      c.markRead("alice", fixture.carolReadMark.seq);
      c.markRead("alice", seq);
      await waitFor(() => reads.length > 0, "alice's read receipt");
      expect(reads).toEqual([seq]);
      c.close();
      a.close();
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    // Each fact in one place: the module's own file has it, core's file no longer.
    const accounts = new Database(join(dataDir, "accounts.db"), { readonly: true });
    const cols = (accounts.query("PRAGMA table_info(accounts)").all() as { name: string }[]).map((c) => c.name);
    const tables = (accounts.query("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name);
    accounts.close();
    expect(cols).not.toContain("last_seen");
    expect(tables).not.toContain("read_marks");
    expect(tables).toContain("seqs"); // core's: never moved (src/store/seqs.ts)
    const messaging = new Database(join(dataDir, "messaging.db"), { readonly: true });
    expect(messaging.query("SELECT seq FROM read_marks WHERE account = 'carol' AND peer = 'alice'").get()).toEqual({ seq: seq });
    messaging.close();
    const presence = new Database(join(dataDir, "presence.db"), { readonly: true });
    expect(presence.query("SELECT ts FROM last_seen WHERE account = 'carol'").get()).not.toBeNull();
    presence.close();
  });
});

describe("a migration stopped between the hand-over and accounts.db's own step", () => {
  let work: string;
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  test("the next start copies again: one mark, at its value; the higher of two last-seen times", async () => {
    work = mkdtempSync(join(tmpdir(), "sb-handover-"));
    const dataDir = join(work, "data");
    cpSync(FIXTURE, dataDir, { recursive: true, filter: (src) => !src.endsWith("fixture.json") });
    const fixture = JSON.parse(readFileSync(join(FIXTURE, "fixture.json"), "utf8")) as Fixture;
    // What a crash right after the hand-over leaves: the module files hold the copies (presence.db a later
    // time, as a server that ran meanwhile could not have written, to tell max() from overwrite), accounts.db
    // is untouched at version 0.
    const m = new Database(join(dataDir, "messaging.db"));
    m.exec("CREATE TABLE read_marks (account TEXT NOT NULL, peer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, peer))");
    m.run("INSERT INTO read_marks VALUES ('carol', 'alice', ?)", [fixture.carolReadMark.seq]);
    m.close();
    const p = new Database(join(dataDir, "presence.db"));
    p.exec("CREATE TABLE last_seen (account TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID");
    p.run("INSERT INTO last_seen VALUES ('carol', ?)", [fixture.carolLastSeen + 60_000]);
    p.close();
    expect(version(join(dataDir, "accounts.db"))).toBe(0);

    const srv = await startServer({ dataDir });
    try {
      const a = await srv.client(fixture.alice);
      const own = await srv.client(fixture.carol);
      expect(await own.request("presence", { u: "carol" })).toEqual({ online: false, ls: minute(fixture.carolLastSeen + 60_000) });
      await own.close();
      a.close();
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    expect(version(join(dataDir, "accounts.db"))).toBe(current(join(dataDir, "accounts.db")));
    const after = new Database(join(dataDir, "messaging.db"), { readonly: true });
    expect(after.query("SELECT account, peer, seq FROM read_marks").all()).toEqual([{ account: "carol", peer: "alice", seq: fixture.carolReadMark.seq }]);
    after.close();
  });
});

describe("a module file the hand-over cannot write", () => {
  let work: string;
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  test("a damaged messaging.db: the start stops naming it, not accounts.db; accounts.db keeps its data and version", async () => {
    work = mkdtempSync(join(tmpdir(), "sb-handover-bad-"));
    const dataDir = join(work, "data");
    cpSync(FIXTURE, dataDir, { recursive: true, filter: (src) => !src.endsWith("fixture.json") });
    const path = join(dataDir, "messaging.db");
    writeFileSync(path, "not a database, a text file where messaging.db should be ".repeat(100));
    const r = await serveFails(dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} is damaged`);
    expect(r.stderr).not.toContain(`${join(dataDir, "accounts.db")} is damaged`);
    expect(version(join(dataDir, "accounts.db"))).toBe(0);
    const db = new Database(join(dataDir, "accounts.db"), { readonly: true });
    expect(db.query("SELECT COUNT(*) AS n FROM read_marks").get()).toEqual({ n: 1 });
    db.close();
  });
});

describe("files the server cannot use", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "sb-schema-"));
    const srv = await startServer({ dataDir });
    await srv.http_get("/healthz"); // its signal handlers are in place once it serves
    expect(await srv.stop()).toBe(0);
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  test("a file of a newer schema version: the start stops, naming the file and both versions; the file is untouched", async () => {
    const path = join(dataDir, "groups.db");
    const db = new Database(path);
    db.exec("PRAGMA user_version = 99");
    db.close();
    const r = await serveFails(dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} has schema version 99, newer than this server's 1: a newer switchboard wrote it`);
    expect(version(path)).toBe(99);
    const fix = new Database(path);
    fix.exec("PRAGMA user_version = 1");
    fix.close();
  });

  test("a file that is not a database: the start stops, naming the file and what to do", async () => {
    const path = join(dataDir, "keys.db");
    for (const side of ["-wal", "-shm"]) rmSync(path + side, { force: true });
    writeFileSync(path, "this is not a database, it is a text file that landed here ".repeat(100));
    const r = await serveFails(dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} is damaged`);
    expect(r.stderr).toContain("switchboard restore DIR");
  });
});
