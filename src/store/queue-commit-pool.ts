/**
 * The main thread's side of queue.committer = "worker" (the thread is
 * queue-commit-worker.ts; why: queue-commit.ts). One Worker for all shards: a
 * commit of the default 8 shards every 5 ms is far from filling one thread, and
 * the machine this runs on has few cores to give.
 *
 * At most one commit per shard is in flight (the Shard waits for its reply before
 * it posts the next), and every batch in flight is kept until its reply: if the
 * Worker dies (an exception, an exit), a new one is started and every batch in
 * flight is posted again. That is safe because a batch may be applied twice: the
 * inserts are INSERT OR IGNORE, deletes are idempotent, and riders' statements are
 * upserts. Nothing in flight has been reported durable, so no `sent` went out for
 * it: a crash of the Worker costs time, never an acknowledged item. A Worker that
 * dies again and again without committing anything stops the server (an uncaught
 * error naming the cause), loudly, rather than holding every `sent` forever.
 *
 * Blocking waits (wait(): explicit flush, expiry, device drops, shutdown) use
 * Atomics.wait on a counter the Worker bumps after each reply, and take the
 * reply with receiveMessageOnPort, so they need no turn of the event loop.
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from "node:worker_threads";
import type { Database } from "bun:sqlite";
import type { Durability } from "./sqlite.ts";
import { packItems, type CommitBatch, type CommitDone, type CommitError, type Committer } from "./queue-commit.ts";
import type { FromWorker, ToWorker } from "./queue-commit-worker.ts";

/**
 * The Worker's module. In the compiled binary (package.json `build` lists it as a second entrypoint) Bun keeps it at
 * store/queue-commit-worker.js under the common root of the entrypoints (src/), reached by a path relative to that
 * root; import.meta.url there names the binary, not this file.
 */
const WORKER_PATH = import.meta.url.startsWith("file:///$bunfs/") ? "./store/queue-commit-worker.ts" : new URL("./queue-commit-worker.ts", import.meta.url);

/** Deaths in a row (no commit succeeding between them) after which the server stops instead of restarting the Worker. */
const MAX_RESTARTS = 5;

interface InFlight {
  id: number;
  msg: ToWorker;
  done: (r: CommitDone | CommitError, inWait: boolean) => void;
}

export class WorkerCommitter implements Committer {
  readonly async = true;
  private worker!: Worker;
  private port!: MessagePort;
  /** [0]: replies posted (the blocking wait's counter); [1]: 1 once the Worker's thread is exiting. */
  private state!: Int32Array;
  private paths: string[] = [];
  /** Files whose checkpoints run in the Worker (offload), posted again to a replacement. */
  private others: string[] = [];
  private inflight = new Map<number, InFlight>();
  private nextId = 1;
  private deaths = 0;
  private closed = false;

  constructor(
    private durability: Durability,
    /** Told each time the Worker died and was replaced (a log line and a counter, in the queue). */
    private onRestart: (why: string) => void,
  ) {
    this.start();
  }

  private start(): void {
    const signal = new SharedArrayBuffer(8);
    this.state = new Int32Array(signal);
    const ch = new MessageChannel();
    this.port = ch.port1;
    this.worker = new Worker(WORKER_PATH, {
      workerData: { port: ch.port2, signal, durability: this.durability },
      transferList: [ch.port2],
    });
    const worker = this.worker;
    this.port.on("message", (m: FromWorker) => this.handle(m, false));
    worker.on("error", (e: Error) => {
      if (this.worker === worker) this.died(`the commit worker threw: ${e.message}`);
    });
    worker.on("exit", (code) => {
      if (this.worker === worker && !this.closed) this.died(`the commit worker exited with code ${code}`);
    });
    // The worker must not keep a server that has closed its queue alive, nor one that forgot to.
    worker.unref();
    (this.port as unknown as { unref?: () => void }).unref?.();
    for (const [i, path] of this.paths.entries()) if (path !== undefined) this.post({ t: "open", index: i, path });
    for (const path of this.others) this.post({ t: "checkpoint", path });
  }

  private died(why: string): void {
    if (++this.deaths > MAX_RESTARTS) {
      throw new Error(`${why}; it died ${this.deaths} times in a row without committing: stopping (nothing in flight was reported durable)`);
    }
    this.onRestart(why);
    const old = this.port;
    this.start();
    old.close();
    for (const f of this.inflight.values()) this.post(f.msg);
  }

  private post(m: ToWorker): void {
    this.port.postMessage(m);
  }

  private handle(m: FromWorker, inWait: boolean): void {
    if (m.t === "closed") return;
    const f = this.inflight.get(m.index);
    if (f === undefined || f.id !== m.id) return; // a reply to a batch posted again after a restart, answered twice
    this.inflight.delete(m.index);
    if (m.t === "done") this.deaths = 0;
    f.done(m.t === "done" ? { dropped: m.dropped, unrowed: m.unrowed } : m.error, inWait);
  }

  add(index: number, db: Database, path: string): void {
    // The main thread's connection only reads and writes what is rare (push jobs, expiry): the WAL's checkpoints
    // are the Worker's (its connection commits), so none ever runs on the event loop.
    db.exec("PRAGMA wal_autocheckpoint = 0");
    this.paths[index] = path;
    this.post({ t: "open", index, path });
  }

  offload(db: Database, path: string): void {
    // Its writes stay on the main thread (they are small and their callers want the answer now); the checkpoint
    // that copies them into the file, with its fsync, is the Worker's.
    db.exec("PRAGMA wal_autocheckpoint = 0");
    this.others.push(path);
    this.post({ t: "checkpoint", path });
  }

  commit(index: number, batch: CommitBatch, done: (r: CommitDone | CommitError, inWait: boolean) => void): void {
    if (this.inflight.has(index)) throw new Error(`WorkerCommitter.commit: shard ${index} has a commit in flight; wait for its done first`);
    const { items, ...rest } = batch;
    const msg: ToWorker = { t: "commit", index, id: this.nextId++, batch: rest, items: packItems(items) };
    this.inflight.set(index, { id: msg.id, msg, done });
    this.post(msg);
  }

  wait(index: number): void {
    while (this.inflight.has(index)) this.pump();
  }

  /** Takes one reply, blocking until there is one (or the Worker is found dead and replaced). */
  private pump(): void {
    const seen = Atomics.load(this.state, 0);
    const exiting = Atomics.load(this.state, 1) !== 0; // read before the port: a reply it posted before exiting is there
    const r = receiveMessageOnPort(this.port);
    if (r !== undefined) return this.handle(r.message as FromWorker, true);
    if (exiting) return this.died("the commit worker exited");
    Atomics.wait(this.state, 0, seen, 50); // bounded: the exit flag is not notified on every path
  }

  close(): void {
    for (const index of [...this.inflight.keys()]) this.wait(index);
    this.closed = true;
    this.post({ t: "close" });
    // Its connections closed (and the WAL checkpointed) before the main thread closes its own.
    const until = Date.now() + 10_000;
    let closed = false;
    while (!closed && Date.now() < until) {
      const seen = Atomics.load(this.state, 0);
      const exiting = Atomics.load(this.state, 1) !== 0; // read before the port: its last reply is there by then
      const r = receiveMessageOnPort(this.port);
      if (r !== undefined) closed = (r.message as FromWorker).t === "closed";
      else if (exiting) break;
      else Atomics.wait(this.state, 0, seen, 50);
    }
    this.port.close();
    // Its databases are closed when it said so; terminating a Worker that holds them has crashed Bun (#29275).
    if (!closed) {
      void this.worker.terminate();
      throw new Error("the commit worker did not close its databases within 10 s (everything was committed before: only its checkpoint is missing)");
    }
  }
}
