/**
 * Issue 17, admin commands: `switchboard status`, `user list`, `user
 * disable` / `enable`, `device kick`, `user delete`, `version`, each a real
 * CLI process asking a real server process over its loopback admin API, and
 * what each one did checked from the outside: by SDK clients over real
 * sockets (their close reasons, a refused login, a queued message kept) and
 * by reading the server's own SQLite files (nothing of a deleted account is
 * left in accounts.db, the queue shards, or the modules' keys.db, groups.db,
 * messaging.db and presence.db).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { ServerError, type CloseInfo, type GroupEvent, type Message, type SwitchboardClient } from "../../src/client/client.ts";
import { readKeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { Cli, jsonLines } from "../cli/run.ts";
import pkg from "../../package.json" with { type: "json" };

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cli: Cli;
const clients: SwitchboardClient[] = [];
const http = () => ["--http-port", String(srv.http)];

async function client(kf: Parameters<TestServer["client"]>[0], setup?: (c: SwitchboardClient) => void, autoAck = true): Promise<SwitchboardClient> {
  const c = await srv.client(kf, { setup, autoAck });
  clients.push(c);
  return c;
}

/** Rows of a server file, read through a connection of our own (WAL: we see what it committed). */
function count(file: string, sql: string, ...args: string[]): number {
  const db = new Database(join(srv.dataDir, file), { readonly: true });
  try {
    return (db.query(sql).get(...args) as { n: number }).n;
  } finally {
    db.close();
  }
}
const queued = (account: string) =>
  readdirSync(join(srv.dataDir, "queues"))
    .filter((f) => f.endsWith(".db"))
    .reduce((n, f) => n + count(join("queues", f), "SELECT COUNT(*) AS n FROM items WHERE account = ?", account), 0);

beforeAll(async () => {
  srv = await startServer({ args: ["--presence-grace-ms", "0"] }); // last seen is written once an account is offline, after the grace
  cli = new Cli(mkdtempSync(join(tmpdir(), "sb-admin-")));
});
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  cli?.killAll();
  srv?.cleanup();
  if (cli) rmSync(cli.cwd, { recursive: true, force: true });
});

describe("status and version", () => {
  test("status shows version, connections, sessions (the canary's left out), the queue and its oldest item, commits, canary, storage, role", async () => {
    const alice = await client(await srv.newDevice("st-alice"));
    await srv.newDevice("st-bob"); // offline: what alice sends waits in its queue
    await alice.send("st-bob", "waiting");
    const st = JSON.parse(await cli.ok(["status", ...http(), "--json"]));
    expect(st.version).toBe(pkg.version);
    expect(st.pid).toBe(srv.proc.pid);
    expect(st.sessions).toBe(1);
    expect(st.connections.tcp).toBeGreaterThanOrEqual(1);
    expect(st.connections.tls).toBe(0);
    expect(st.queue.depth).toBeGreaterThanOrEqual(1);
    expect(st.queue.oldest_age_s).not.toBeNull();
    expect(st.commit.count).toBeGreaterThan(0);
    expect(st.storage).toEqual({ ok: true, faults: [] });
    expect(st.cluster).toEqual({ role: "single" });
    expect(st.modules.map((m: { name: string }) => m.name)).toContain("messaging");
    expect(typeof st.canary === "object" && "ok" in st.canary).toBe(true);

    const text = await cli.ok(["status", ...http()]);
    expect(text).toContain(`switchboard ${pkg.version}, pid ${srv.proc.pid}`);
    expect(text).toMatch(/^sessions +1$/m);
    expect(text).toMatch(/^queue +\d+ items, oldest /m);
    expect(text).toMatch(/^storage +ok$/m);
    expect(text).toMatch(/^cluster +single$/m);
  });

  test("version prints this program's version; status without a server says what to pass", async () => {
    expect(await cli.ok(["version"])).toBe(`switchboard ${pkg.version} (bun ${Bun.version})\n`);
    expect(JSON.parse(await cli.ok(["version", "--json"]))).toEqual({ version: pkg.version, bun: Bun.version });
    const r = await cli.sb(["status", "--http-port", "1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("cannot reach the server at http://127.0.0.1:1/admin/status");
    expect(r.stderr).toContain("Pass the --config, or --http-port, it runs with");
  });

  test("each admin command's --help shows its own flags only", async () => {
    const status = await cli.ok(["status", "--help"]);
    expect(status).toContain("--http-port N");
    expect(status).not.toContain("--tcp-port");
    expect(status).not.toContain("--SETTING");
    expect(status).not.toContain("--yes");
    expect(await cli.ok(["user", "delete", "--help"])).toContain("--yes");
    expect(await cli.ok(["device", "kick", "--help"])).toContain("usage: switchboard device kick USER DEVICE");
    const bad = await cli.sb(["user", "disable", "x", "--tcp-port", "5"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("user disable: unknown flag --tcp-port");
  });
});

describe("user list", () => {
  test("every account with its devices, who is online, and whether it is disabled; not the server's own canary accounts", async () => {
    const kf = await srv.newDevice("ls-carol");
    await srv.newDevice("ls-carol"); // a second device
    srv.addUser("ls-dave"); // no device yet
    const c = await client(kf);
    const rows = jsonLines(await cli.ok(["user", "list", ...http(), "--json"]));
    const carol = rows.find((r) => r.name === "ls-carol");
    expect(carol).toMatchObject({ devices: 2, online: 1, disabled: false });
    expect(rows.find((r) => r.name === "ls-dave")).toMatchObject({ devices: 0, online: 0, disabled: false });
    expect(rows.some((r) => r.name.startsWith("switchboard."))).toBe(false);
    const text = await cli.ok(["user", "list", ...http()]);
    expect(text.split("\n")[0]).toMatch(/^ACCOUNT +CREATED +DEVICES +ONLINE +STATE$/);
    expect(text).toMatch(/^ls-carol .* 2 +1 +active$/m);
    await c.close();
  });
});

describe("user disable and enable", () => {
  test("disable closes the account's sessions (account_disabled) and refuses its logins; what was sent to it waits; enable lets it back in", async () => {
    const kf = await srv.newDevice("dis-erin");
    const frank = await client(await srv.newDevice("dis-frank"));
    const closes: CloseInfo[] = [];
    await client(kf, (c) => c.on("close", (x) => closes.push(x)));

    expect(await cli.ok(["user", "disable", "dis-erin", ...http()])).toBe("disabled dis-erin; 1 session closed\n");
    await waitFor(() => closes.length > 0, "erin's session to close");
    expect(closes[0]).toMatchObject({ reason: "account_disabled", willReconnect: false });
    expect(await cli.ok(["user", "disable", "dis-erin", ...http()])).toBe("dis-erin was already disabled\n");

    const refused = await srv.client(kf, { reconnect: false }).then(() => null, (e: unknown) => e);
    expect(refused).toBeInstanceOf(ServerError);
    expect((refused as ServerError).code).toBe("account_disabled");
    // The account's data stays: a message to it is still accepted and kept.
    await frank.send("dis-erin", "kept for you");
    expect(jsonLines(await cli.ok(["user", "list", ...http(), "--json"])).find((r) => r.name === "dis-erin")).toMatchObject({ disabled: true, devices: 1 });

    expect(await cli.ok(["user", "enable", "dis-erin", ...http()])).toBe("enabled dis-erin\n");
    const got: Message[] = [];
    await client(kf, (c) => c.on("message", (m) => got.push(m)));
    await waitFor(() => got.length > 0, "the message kept while disabled");
    expect(new TextDecoder().decode(got[0]!.payload)).toBe("kept for you");
  });

  test("an unknown account and the server's own are refused, exit 1, with what to do", async () => {
    const r = await cli.sb(["user", "disable", "nobody-here", ...http()]);
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toContain("switchboard: no account nobody-here\n  `switchboard user list` shows the accounts");
    const own = await cli.sb(["user", "disable", "switchboard.canary-a", ...http()]);
    expect(own.code).toBe(1);
    expect(own.stderr).toContain("the server's own account");
  });
});

describe("device kick", () => {
  test("closes the device's sessions with `kicked`; the device logs in again; an unknown device is refused", async () => {
    const kf = await srv.newDevice("kick-gina");
    const closes: CloseInfo[] = [];
    let readies = 0;
    await client(kf, (c) => {
      c.on("close", (x) => closes.push(x));
      c.on("ready", () => readies++);
    });
    expect(await cli.ok(["device", "kick", "kick-gina", "1", ...http()])).toBe("closed 1 session of kick-gina device 1\n");
    await waitFor(() => closes.length > 0 && readies === 2, "the kick and the SDK's reconnect");
    expect(closes[0]).toMatchObject({ reason: "kicked", willReconnect: true });

    const r = await cli.sb(["device", "kick", "kick-gina", "9", ...http()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("account kick-gina has no active device 9");
    const bad = await cli.sb(["device", "kick", "kick-gina", "one", ...http()]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("DEVICE must be a device id");
  });
});

describe("user delete", () => {
  test("deletes devices, queues, keys, group memberships and read marks; the name stays reserved; others keep their data", async () => {
    const d = srv.dataDir;
    // Harry enrolls as an operator's user would, with the CLI: `device enroll` publishes his end-to-end keys.
    const code = JSON.parse(await cli.ok(["user", "add", "del-harry", "--data-dir", d, "--json"])).code;
    await cli.ok(["device", "enroll", "--user", "del-harry", "--code", code, "--key", "harry.key", "--port", String(srv.tcp)]);
    const events: GroupEvent[] = [];
    const ivy = await client(await srv.newDevice("del-ivy"), (c) => c.on("group", (e) => events.push(e)));
    const { g } = await ivy.createGroup("both", ["del-harry"]);
    await ivy.send("del-harry", "one");
    await ivy.send("del-harry", "two");
    const harry = readKeyFile(join(cli.cwd, "harry.key"));
    const closes: CloseInfo[] = [];
    const h = await client(harry, undefined, false); // no acks: what ivy sent stays queued
    h.markRead("del-ivy", 1);
    await waitFor(() => count("messaging.db", "SELECT COUNT(*) AS n FROM read_marks WHERE account = ?", "del-harry") === 1, "harry's read mark");
    // Before: each thing the deletion must remove is there (so the checks below can fail).
    expect(count("keys.db", "SELECT COUNT(*) AS n FROM identities WHERE account = ?", "del-harry")).toBe(1);
    expect(queued("del-harry")).toBeGreaterThanOrEqual(2);
    expect(count("groups.db", "SELECT COUNT(*) AS n FROM members WHERE account = ?", "del-harry")).toBe(1);
    await h.setPresence("active"); // online means in use (docs/PROTOCOL.md §6.10) ...
    await h.close(); // ... and its last seen is written when it goes offline
    await waitFor(() => count("presence.db", "SELECT COUNT(*) AS n FROM last_seen WHERE account = ?", "del-harry") === 1, "harry's last seen");
    await client(harry, (c) => c.on("close", (x) => closes.push(x)), false);

    const r = await cli.sb(["user", "delete", "del-harry", ...http()]);
    expect(r.code).toBe(2); // not on a terminal: it needs --yes
    expect(r.stderr).toContain("pass --yes to delete it");
    const out = await cli.ok(["user", "delete", "del-harry", "--yes", ...http()]);
    expect(out).toMatch(/^deleted del-harry: 1 device, \d+ queued items dropped; the name is reserved for queue\.retention\n$/);

    await waitFor(() => closes.length > 0, "harry's session to close");
    expect(closes[0]).toMatchObject({ reason: "revoked", willReconnect: false });
    await waitFor(() => events.some((e) => e.op === "leave" && e.members.includes("del-harry")), "ivy to hear harry leave the group");
    expect((await ivy.groupInfo(g)).members.map((m) => m.u)).toEqual(["del-ivy"]);
    expect(count("keys.db", "SELECT COUNT(*) AS n FROM identities WHERE account = ?", "del-harry")).toBe(0);
    expect(count("keys.db", "SELECT COUNT(*) AS n FROM otks WHERE account = ?", "del-harry")).toBe(0);
    expect(queued("del-harry")).toBe(0);
    expect(count("groups.db", "SELECT COUNT(*) AS n FROM members WHERE account = ?", "del-harry")).toBe(0);
    expect(count("messaging.db", "SELECT COUNT(*) AS n FROM read_marks WHERE account = ?1 OR peer = ?1", "del-harry")).toBe(0);
    expect(count("presence.db", "SELECT COUNT(*) AS n FROM last_seen WHERE account = ?", "del-harry")).toBe(0);
    for (const sql of [
      "SELECT COUNT(*) AS n FROM accounts WHERE name = ?1",
      "SELECT COUNT(*) AS n FROM devices WHERE account = ?1",
      "SELECT COUNT(*) AS n FROM enroll_codes WHERE account = ?1",
    ]) expect([sql, count("accounts.db", sql, "del-harry")]).toEqual([sql, 0]);
    expect(count("accounts.db", "SELECT COUNT(*) AS n FROM tombstones WHERE name = ?", "del-harry")).toBe(1);

    // The name cannot be taken again (by the CLI, writing the directory itself), nor can its key log in.
    const again = await cli.sb(["user", "add", "del-harry", "--data-dir", d]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/account del-harry was deleted on \d{4}-\d\d-\d\d; its name is reserved until \d{4}-\d\d-\d\d \(queue\.retention\)/);
    const login = await srv.client(harry, { reconnect: false }).then(() => null, (e: unknown) => e);
    expect((login as ServerError).code).toBe("auth_failed");
    const send = await ivy.send("del-harry", "three").then(() => null, (e: unknown) => e);
    expect((send as ServerError).code).toBe("unknown_user");
    expect(jsonLines(await cli.ok(["user", "list", ...http(), "--json"])).some((u) => u.name === "del-harry")).toBe(false);
    // Ivy's own account is untouched.
    expect(jsonLines(await cli.ok(["user", "list", ...http(), "--json"])).find((u) => u.name === "del-ivy")).toMatchObject({ devices: 1 });
    const twice = await cli.sb(["user", "delete", "del-harry", "--yes", ...http()]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain("no account del-harry");
  });
});

describe("the admin API answers loopback only", () => {
  test("from this machine's own non-loopback address: 403 for status, users and every operation; /metrics still answers", async () => {
    const ip = Object.values(networkInterfaces()).flat().find((a) => a && a.family === "IPv4" && !a.internal)?.address;
    if (ip === undefined) throw new Error("this test needs a non-loopback IPv4 address on the machine (os.networkInterfaces() lists none): bring up a network interface");
    const open = await startServer({ args: ["--http-host", "0.0.0.0", "--canary-interval", "0"] });
    try {
      open.addUser("lo-kim");
      const at = (path: string, method = "GET") => fetch(`http://${ip}:${open.http}${path}`, { method });
      for (const [path, method] of [["/admin/status", "GET"], ["/admin/users", "GET"], ["/admin/users/lo-kim/delete", "POST"], ["/admin/users/lo-kim/disable", "POST"], ["/admin/users/lo-kim/devices/1/kick", "POST"]] as const) {
        const r = await at(path, method);
        expect({ path, status: r.status, body: await r.text() }).toEqual({ path, status: 403, body: "the admin API is allowed from loopback only\n" });
      }
      expect((await at("/metrics")).status).toBe(200);
      // Nothing happened: from loopback the account is there, enabled.
      const users = (await (await fetch(`http://127.0.0.1:${open.http}/admin/users`)).json()) as { users: { name: string; disabled: boolean }[] };
      expect(users.users.find((u) => u.name === "lo-kim")).toMatchObject({ disabled: false });
    } finally {
      open.cleanup();
    }
  });
});
