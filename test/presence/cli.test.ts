/**
 * The CLI's presence commands as real subprocesses against a real server:
 * `contacts add|remove|list`, `privacy`, `block`/`unblock`, and the chat
 * header (online, last seen, typing is shown only on a terminal) and its
 * `/block`.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { Cli } from "../cli/run.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { readKeyFile } from "../../src/client/keys.ts";

setDefaultTimeout(60_000);
let srv: TestServer;
let cli: Cli;
let cwd: string;
beforeAll(async () => {
  srv = await startServer({ args: ["--presence-grace-ms", "0", "--presence-coalesce-ms", "0"] });
  cwd = mkdtempSync(join(tmpdir(), "sb-presence-cli-"));
  cli = new Cli(cwd);
});
afterAll(() => {
  for (const p of cli?.running ?? []) p.kill("SIGKILL");
  srv?.cleanup();
  rmSync(cwd, { recursive: true, force: true });
});

const tcp = () => ["--port", String(srv.tcp)];
async function enroll(name: string): Promise<string> {
  const { code } = JSON.parse(await cli.ok(["user", "add", name, "--json", "--data-dir", srv.dataDir]));
  await cli.ok(["device", "enroll", "--user", name, "--code", code, "--key", `${name}.key`, ...tcp()]);
  return `${name}.key`;
}

test("contacts, privacy, block: every command, its bad inputs, and the chat header and /block", async () => {
  const ak = await enroll("pcli-alice");
  const bk = await enroll("pcli-bob");
  expect(await cli.ok(["contacts", "add", "pcli-bob", "--key", ak])).toBe("added pcli-bob; 1 contact\n");
  expect(JSON.parse(await cli.ok(["contacts", "list", "--key", ak, "--json"]))).toEqual({ contacts: ["pcli-bob"], blocked: [] });
  const unknown = await cli.sb(["contacts", "add", "nobody-here", "--key", ak]);
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toContain("unknown_user");
  const noArg = await cli.sb(["contacts", "add", "--key", ak]);
  expect(noArg.code).toBe(2);
  expect(await cli.ok(["privacy", "--key", ak])).toBe("last seen: contacts\nonline:    contacts\n");
  expect(await cli.ok(["privacy", "--online", "everyone", "--key", ak])).toBe("last seen: contacts\nonline:    everyone\n");
  const bad = await cli.sb(["privacy", "--online", "friends", "--key", ak]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("--online must be everyone, contacts or nobody");
  await cli.ok(["contacts", "add", "pcli-alice", "--key", bk]);

  // bob is in use and sees alice: alice's chat header says so, and goes to last seen when bob leaves.
  const bob: SwitchboardClient = await srv.client(readKeyFile(join(cwd, bk)));
  await bob.setPresence("active");
  const chat = cli.start(["chat", "--key", ak, "--to", "pcli-bob", "--plain"]);
  expect(await chat.line((l) => l.startsWith("chatting with"))).toBe("chatting with pcli-bob (online) as pcli-alice (device 1); one message per input line");
  await bob.setPresence("idle");
  expect(await chat.line((l) => l.includes("last seen"))).toMatch(/^ {2}pcli-bob: last seen today at \d\d:\d\d$/);
  await bob.setPresence("active");
  expect(await chat.line((l) => l.endsWith("is online"))).toBe("  pcli-bob is online");

  chat.write("/block\n");
  expect(await chat.line((l) => l.includes("blocked"))).toBe("  blocked pcli-bob: no messages, typing or presence between you; /unblock to undo");
  const refused = await bob.send("pcli-alice", "let me in").then(() => null, (e: Error & { code?: string }) => e);
  expect(refused?.code).toBe("blocked");
  expect(JSON.parse(await cli.ok(["contacts", "list", "--key", ak, "--json"]))).toEqual({ contacts: ["pcli-bob"], blocked: ["pcli-bob"] });
  chat.write("/unblock\n");
  expect(await chat.line((l) => l.includes("unblocked"))).toBe("  unblocked pcli-bob");
  chat.write("/quit\n");
  expect(await chat.end()).toBe(0);

  expect(await cli.ok(["block", "pcli-bob", "--key", ak])).toBe("blocked pcli-bob\n");
  expect(await cli.ok(["unblock", "pcli-bob", "--key", ak])).toBe("unblocked pcli-bob\n");
  const self = await cli.sb(["block", "pcli-alice", "--key", ak]);
  expect(self.code).toBe(1);
  expect(self.stderr).toContain("your own account");
  expect(await cli.ok(["contacts", "remove", "pcli-bob", "--key", ak])).toBe("removed pcli-bob; 0 contacts\n");
  await waitFor(async () => (await cli.ok(["contacts", "list", "--key", ak])) === "no contacts\n", "the contact to go");
  await bob.close();
});

test("user delete: the deleted account's contacts, blocks and privacy go, and so does every row naming it in others' lists", async () => {
  const { Database } = await import("bun:sqlite");
  const ak = await enroll("pdel-alice");
  const ck = await enroll("pdel-carol");
  await cli.ok(["contacts", "add", "pdel-carol", "--key", ak]);
  await cli.ok(["block", "pdel-carol", "--key", ak]);
  await cli.ok(["contacts", "add", "pdel-alice", "--key", ck]);
  await cli.ok(["privacy", "--last-seen", "nobody", "--key", ck]);
  const rows = () => {
    const db = new Database(join(srv.dataDir, "presence.db"), { readonly: true });
    try {
      const n = (sql: string) => (db.query(sql).get("pdel-carol") as { n: number }).n;
      return {
        contacts: n("SELECT COUNT(*) AS n FROM contacts WHERE account = ?1 OR contact = ?1"),
        blocks: n("SELECT COUNT(*) AS n FROM blocks WHERE account = ?1 OR blocked = ?1"),
        privacy: n("SELECT COUNT(*) AS n FROM privacy WHERE account = ?1"),
      };
    } finally {
      db.close();
    }
  };
  expect(rows()).toEqual({ contacts: 2, blocks: 1, privacy: 1 });
  await cli.ok(["user", "delete", "pdel-carol", "--yes", "--http-port", String(srv.http)]);
  expect(rows()).toEqual({ contacts: 0, blocks: 0, privacy: 0 });
  expect(JSON.parse(await cli.ok(["contacts", "list", "--key", ak, "--json"]))).toEqual({ contacts: [], blocked: [] });
});
