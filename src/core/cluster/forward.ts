/**
 * Messages between nodes, over the node links (link.ts): what a node sends
 * to an account's home node and what it does with what its peers send it.
 *
 * Item kinds (msgpack bodies of LinkItems, field `k`):
 * - `m` one message's copies for accounts homed on the receiving node. The
 *   home queues them through its own store acceptance, keyed like the
 *   sender's (sending account, device, client id): a retry after a restart
 *   of the home finds the record (`recall`) and queues nothing again; within
 *   one process the link's dedup answers it. The link acks only once the
 *   copies are durable there, which is when the sender's node counts them
 *   toward `sent` (Send.release).
 * - `d` an item (a receipt, an event) for every device of an account, queued
 *   by its home, which alone knows the devices. A `dlv`/`read` receipt about
 *   a message still waiting for its `sent` here waits for it (the ack of the
 *   copies and the receipt travel on two different sockets).
 * - `q` / `r` a directory look-up and its answer (device ids, key versions).
 * - `c` the devices of an account changed on its home: peers drop their copy.
 *
 * Placement is fixed over cluster.nodes (node.ts), so an account's home node
 * is known without Redis; its address is read from the heartbeats at every
 * (re)connect of the link.
 */
import { decodeBody, encodeBody } from "../../protocol/codec.ts";
import type { AcceptedRecord, DeliveryQueue } from "../../store/queue.ts";
import type { Accept, Forward, ForwardedCopy, Stanza } from "../accept.ts";
import type { Delivery, EnqueueMeta } from "../delivery.ts";
import type { ActiveDevice, Directory, DirectoryEntry } from "../directory.ts";
import { log } from "../log.ts";
import { LinkReceiver, LinkSender, type LinkItem } from "./link.ts";

/** How long a peer's directory answer is trusted without a change notice: the backstop for a notice lost in a crash. */
const DIR_TTL_MS = 60_000;
/** An account its home does not know is asked again after this (it may be created there any time). */
const DIR_MISS_TTL_MS = 2_000;

type Item =
  | { k: "m"; r: AcceptedRecord; c: ForwardedCopy[] }
  | { k: "d"; a: string; m: EnqueueMeta; s: Stanza; x: number }
  | { k: "q"; a: string }
  | { k: "r"; a: string; d: ActiveDevice[] | null }
  | { k: "c"; a: string };

/** What the home side queues into: the server's own objects. */
export interface Local {
  queue: DeliveryQueue;
  delivery: Delivery;
  accept: Accept;
  directory: Directory;
}

export class Forwarder implements Forward {
  private senders = new Map<string, LinkSender>();
  private receiver: LinkReceiver;
  private local: Local | null = null;
  /** Unique keys for items that are not messages: a restarted sender must not reuse a key its peer still remembers. */
  private readonly boot = crypto.randomUUID().slice(0, 8);
  private n = 0;
  private dir = new Map<string, { e: DirectoryEntry | null; at: number }>();
  private asking = new Map<string, Promise<void>>();
  private answers = new Map<string, (() => void)[]>();
  /** Messages forwarded from here whose `sent` is not out yet, by (sender, client id): receipts about them wait. */
  private unsent = new Map<string, { device: number; done: Promise<void> }>();

  constructor(
    private readonly nodeId: string,
    /** The fixed home node of an account (placement over cluster.nodes). */
    private readonly homeOf: (account: string) => string,
    /** A peer's link address now, from its heartbeat; null while unknown (the link retries). */
    private readonly peerAddress: (node: string) => { host: string; port: number } | null,
    private readonly peers: readonly string[],
  ) {
    this.receiver = new LinkReceiver((from, items) => this.received(from, items));
  }

  /** Binds the link listener; returns its port (published in the heartbeat). */
  listen(host: string, port: number): number {
    return this.receiver.listen(host, port);
  }

  /** The server's objects, once they exist; also hooks the directory up to peers' answers and notices. */
  attach(local: Local): void {
    this.local = local;
    local.accept.forward = this;
    local.directory.remote = (account) => this.cached(account);
    local.directory.changed = (account) => {
      if (this.homeOf(account) !== this.nodeId) return void this.dir.delete(account);
      for (const p of this.peers) if (p !== this.nodeId) this.sendItem(p, { k: "c", a: account });
    };
  }

  remoteHome(account: string): string | null {
    const h = this.homeOf(account);
    return h === this.nodeId ? null : h;
  }

  copies(node: string, rec: AcceptedRecord, copies: ForwardedCopy[]): Promise<void> {
    const key = `m\u0000${rec.sender}\u0000${rec.device}\u0000${rec.cid}`;
    const done = this.link(node).send(key, encodeBody({ k: "m", r: rec, c: copies }));
    const u = `${rec.sender}\u0000${rec.cid}`;
    this.unsent.set(u, { device: rec.device, done });
    void done.then(() => this.local!.accept.afterSent(rec.sender, rec.device, rec.cid, () => this.unsent.delete(u)));
    return done;
  }

  toDevices(node: string, account: string, meta: EnqueueMeta, stanza: Stanza, except: number): void {
    this.sendItem(node, { k: "d", a: account, m: meta, s: stanza, x: except });
  }

  /**
   * The directory entry of a remote account, if a fresh answer of its home is here; undefined for a local account.
   * A miss asks the home (see `lookup`) and answers null meanwhile.
   */
  private cached(account: string): DirectoryEntry | null | undefined {
    const home = this.homeOf(account);
    if (home === this.nodeId) return undefined;
    const c = this.dir.get(account);
    if (c && performance.now() - c.at < (c.e ? DIR_TTL_MS : DIR_MISS_TTL_MS)) return c.e;
    void this.lookup(account);
    return null;
  }

  /** True when a fresh answer of the account's home (an entry, or "no such account") is cached here. */
  known(account: string): boolean {
    const c = this.dir.get(account);
    return c !== undefined && performance.now() - c.at < (c.e ? DIR_TTL_MS : DIR_MISS_TTL_MS);
  }

  /** Asks the account's home for its devices; resolves when the answer is cached (one question in flight per account). */
  lookup(account: string): Promise<void> {
    let p = this.asking.get(account);
    if (p) return p;
    p = new Promise<void>((resolve) => {
      const waiting = this.answers.get(account);
      if (waiting) waiting.push(resolve);
      else this.answers.set(account, [resolve]);
      this.sendItem(this.homeOf(account), { k: "q", a: account });
    }).finally(() => this.asking.delete(account));
    this.asking.set(account, p);
    return p;
  }

  private link(node: string): LinkSender {
    let s = this.senders.get(node);
    if (!s) this.senders.set(node, (s = new LinkSender(this.nodeId, () => this.peerAddress(node))));
    return s;
  }

  private sendItem(node: string, item: Item): void {
    void this.link(node).send(`${item.k}\u0000${this.nodeId}\u0000${this.boot}\u0000${++this.n}`, encodeBody(item));
  }

  /** A batch from a peer: resolves once every message copy in it is durable here. */
  private received(from: string, items: LinkItem[]): Promise<void> | void {
    const local = this.local;
    if (local === null) throw new Error("cluster link: a batch arrived before the server attached its stores"); // not acked: retried
    const waits: Promise<void>[] = [];
    for (const [, body] of items) {
      const it = decodeBody(body) as Item;
      switch (it.k) {
        case "m": {
          const w = this.queueCopies(local, it.r, it.c);
          if (w) waits.push(w);
          if (!this.known(it.r.sender)) void this.lookup(it.r.sender); // its reader will answer with `read` to it
          break;
        }
        case "d":
          this.queueForDevices(local, it);
          break;
        case "q": {
          const ds = local.directory.devices(it.a);
          this.sendItem(from, { k: "r", a: it.a, d: ds === null ? null : [...ds] });
          break;
        }
        case "r": {
          this.dir.set(it.a, { e: it.d === null ? null : { devices: it.d, ids: it.d.map((d) => d.device) }, at: performance.now() });
          const w = this.answers.get(it.a);
          this.answers.delete(it.a);
          for (const f of w ?? []) f();
          break;
        }
        case "c":
          this.dir.delete(it.a);
          break;
        default:
          log.warn("cluster link: unknown item kind; ignored", { from, k: (it as { k: unknown }).k });
      }
    }
    if (waits.length) return Promise.all(waits).then(() => {});
  }

  /** A forwarded message's copies, through this node's store acceptance with the sender's dedup key. */
  private queueCopies(local: Local, rec: AcceptedRecord, copies: ForwardedCopy[]): Promise<void> | null {
    if (local.queue.recall(rec.sender, rec.device, rec.cid) !== null) return null; // durable here before (a retry across a restart)
    return new Promise<void>((resolve) => {
      const acc = local.queue.begin(rec, resolve);
      const metas = new Map<number, EnqueueMeta>();
      for (const [account, device, kind, stanza] of copies) {
        let meta = metas.get(kind);
        if (!meta) metas.set(kind, (meta = { kind, fromAccount: rec.sender, fromDevice: rec.device, conv: rec.to, cid: rec.cid, seq: rec.seq, ts: rec.ts }));
        local.delivery.enqueue(account, device, meta, stanza, acc);
      }
      local.queue.release(acc);
    });
  }

  private queueForDevices(local: Local, it: { a: string; m: EnqueueMeta; s: Stanza; x: number }): void {
    const run = () => local.accept.toDevices(it.a, it.m, it.s, it.x);
    // A receipt about a message sent from here: never before its `sent` (ARCHITECTURE step 6).
    const id = it.s.id;
    const u = typeof id === "string" ? this.unsent.get(`${it.a}\u0000${id}`) : undefined;
    if (u === undefined) return run();
    void u.done.then(() => local.accept.afterSent(it.a, u.device, id as string, run));
  }

  /** Batches sent to peers and not yet acknowledged, per peer (link lag, for status). */
  lag(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [n, s] of this.senders) out[n] = s.lag;
    return out;
  }

  stop(): void {
    for (const s of this.senders.values()) s.close();
    this.receiver.stop();
  }
}
