/**
 * The receiving node of the link tests: a real LinkReceiver whose handler
 * makes each batch durable in SQLite (INSERT OR IGNORE by key, as the home's
 * acceptance records dedup) before it resolves. Prints one JSON line per key
 * handed to the handler, so the test can check that no key is handed twice
 * within one process life.
 *   bun link-main.ts --port N --db PATH
 */
import { parseArgs } from "node:util";
import { Database } from "bun:sqlite";
import { LinkReceiver } from "../../src/core/cluster/link.ts";

const { values: a } = parseArgs({ options: { port: { type: "string" }, db: { type: "string" } } });
if (!a.port || !a.db) throw new Error("usage: link-main --port N --db PATH");
const db = new Database(a.db);
db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
db.exec("CREATE TABLE IF NOT EXISTS got (n INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE, body BLOB NOT NULL, sender TEXT NOT NULL)");
const put = db.query("INSERT OR IGNORE INTO got (k, body, sender) VALUES (?, ?, ?)");
const recv = new LinkReceiver((from, items) => {
  db.transaction(() => {
    for (const [k, b] of items) put.run(k, b, from);
  })();
  for (const [k] of items) process.stdout.write(JSON.stringify({ event: "handed", k }) + "\n");
});
const port = recv.listen("127.0.0.1", Number(a.port));
process.stdout.write(JSON.stringify({ event: "listening", port }) + "\n");
