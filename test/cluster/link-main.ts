/**
 * The receiving node of the link tests: a real LinkReceiver whose handler
 * makes each batch durable in SQLite (INSERT OR IGNORE by key, as the home's
 * acceptance records dedup) before it resolves. Prints one JSON line per key
 * handed to the handler, so the test can check that no key is handed twice
 * within one process life.
 *   bun link-main.ts --port N --db PATH [--commit-ms MS]
 * With --commit-ms the handler works like the server's store: it takes the items
 * at once (in order) and makes them durable in a group commit every MS ms,
 * resolving then; each `handed` line says how many batches handed before it
 * were not durable yet (`inflight`: above 0 only when the link pipelines).
 */
import { parseArgs } from "node:util";
import { Database } from "bun:sqlite";
import { LinkReceiver } from "../../src/core/cluster/link-receiver.ts";
import type { LinkItem } from "../../src/core/cluster/link.ts";

const { values: a } = parseArgs({ options: { port: { type: "string" }, db: { type: "string" }, "commit-ms": { type: "string" } } });
if (!a.port || !a.db) throw new Error("usage: link-main --port N --db PATH [--commit-ms MS]");
const db = new Database(a.db);
db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
db.exec("CREATE TABLE IF NOT EXISTS got (n INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE, body BLOB NOT NULL, sender TEXT NOT NULL)");
const put = db.query("INSERT OR IGNORE INTO got (k, body, sender) VALUES (?, ?, ?)");
const write = (rows: [string, LinkItem][]) =>
  db.transaction(() => {
    for (const [from, [k, b]] of rows) put.run(k, b, from);
  })();
const commitMs = a["commit-ms"] === undefined ? 0 : Number(a["commit-ms"]);

let pending: [string, LinkItem][] = [];
let waiting: (() => void)[] = [];
let timer: ReturnType<typeof setTimeout> | null = null;
const commit = () => {
  timer = null;
  write(pending);
  const w = waiting;
  pending = [];
  waiting = [];
  for (const f of w) f();
};

const recv = new LinkReceiver((from, items) => {
  const inflight = waiting.length;
  for (const [k] of items) process.stdout.write(JSON.stringify({ event: "handed", k, inflight }) + "\n");
  if (commitMs === 0) return write(items.map((it) => [from, it]));
  for (const it of items) pending.push([from, it]);
  timer ??= setTimeout(commit, commitMs);
  return new Promise<void>((resolve) => waiting.push(resolve));
});
const port = recv.listen("127.0.0.1", Number(a.port));
process.stdout.write(JSON.stringify({ event: "listening", port }) + "\n");
