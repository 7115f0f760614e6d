/**
 * The commit thread of the delivery queue (queue.committer = "worker"; the main
 * side is queue-commit-pool.ts). It holds its own connection to every shard file
 * and runs each batch it is sent in one transaction (ShardWriter, the same
 * statements as an inline commit), then replies and bumps the shared counter the
 * main thread waits on when it must block (flush, expiry, shutdown). SQLite's WAL
 * checkpoints run here too: this connection commits, so its automatic
 * checkpoint (PASSIVE, every 1000 WAL pages) runs after its commits, and the
 * main thread's connections have theirs turned off (queue-commit-pool.ts). The other SQLite files, which the main
 * thread writes itself (accounts.db, the modules' files), get their checkpoints here too, on a timer.
 */
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import type { Database } from "bun:sqlite";
import { openDatabase, type Durability } from "./sqlite.ts";
import { commitError, ShardWriter, unpackItems, type CommitBatch, type PackedItems } from "./queue-commit.ts";

export type ToWorker =
  | { t: "open"; index: number; path: string }
  | { t: "commit"; index: number; id: number; batch: Omit<CommitBatch, "items">; items: PackedItems }
  | { t: "checkpoint"; path: string }
  | { t: "close" };

export type FromWorker =
  | { t: "done"; index: number; id: number; dropped: number; unrowed: number }
  | { t: "fail"; index: number; id: number; error: ReturnType<typeof commitError> }
  | { t: "closed" };

/**
 * How often the other files' WAL is checkpointed. Their writes (sequence blocks, read marks, last seen) are small;
 * in a second they add well under the 1000 pages at which SQLite's own automatic checkpoint would have run.
 */
const CHECKPOINT_EVERY_MS = 1000;

interface Data {
  port: MessagePort;
  signal: SharedArrayBuffer;
  durability: Durability;
}

if (parentPort !== null) {
  const { port, signal, durability } = workerData as Data;
  const replies = new Int32Array(signal);
  // Seen by a main thread blocked in a wait (it cannot get the exit event then): it replaces this Worker.
  process.on("exit", () => {
    Atomics.store(replies, 1, 1);
    Atomics.notify(replies, 0);
  });
  const writers: ShardWriter[] = [];
  const dbs: Database[] = [];
  /** Files the main thread writes itself (accounts.db, module files): only their checkpoints run here, once a second. */
  const others: Database[] = [];
  const timer = setInterval(() => {
    for (const db of others) {
      try {
        db.exec("PRAGMA wal_checkpoint(PASSIVE)"); // copies what no reader still needs; never waits for the writer
      } catch {
        // busy or a transient I/O error: the next second tries again, and nothing committed depends on it
      }
    }
  }, CHECKPOINT_EVERY_MS);
  const reply = (m: FromWorker): void => {
    port.postMessage(m);
    // After the post: a main thread that sees the counter move finds the reply with receiveMessageOnPort.
    Atomics.add(replies, 0, 1);
    Atomics.notify(replies, 0);
  };
  port.on("message", (m: ToWorker) => {
    if (m.t === "open") {
      const db = openDatabase(m.path, durability);
      dbs[m.index] = db;
      writers[m.index] = new ShardWriter(db, true);
    } else if (m.t === "commit") {
      try {
        const r = writers[m.index]!.apply({ ...m.batch, items: unpackItems(m.items) });
        reply({ t: "done", index: m.index, id: m.id, dropped: r.dropped, unrowed: r.unrowed });
      } catch (e) {
        reply({ t: "fail", index: m.index, id: m.id, error: commitError(e) });
      }
    } else if (m.t === "checkpoint") {
      others.push(openDatabase(m.path, durability));
    } else {
      clearInterval(timer);
      for (const db of [...dbs, ...others]) {
        if (db === undefined) continue;
        try {
          db.exec("PRAGMA wal_checkpoint(TRUNCATE)"); // the WAL back to empty while nothing else writes
        } catch {
          // a reader still open (the main thread's connection): the PASSIVE checkpoints did the rest
        }
        db.close();
      }
      reply({ t: "closed" });
      port.close();
    }
  });
}
