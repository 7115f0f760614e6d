/**
 * The cluster's only link to Redis, built on Bun's `RedisClient` and treating
 * it as unreliable (docs/CLUSTER.md §"Redis client" has the test that chose it
 * over ioredis and the defects worked around here, all seen on Bun 1.4.5
 * against redis-server 7.0.15):
 *
 * - With the offline queue on (the default), commands sent while Redis is down
 *   wait silently for the whole outage and then run in a burst; a lease
 *   renewal must fail fast instead, so the queue is off and every command has
 *   its own deadline (a connected but stopped Redis answers nothing at all).
 * - `onclose` does not fire when the server dies; it fires only when the
 *   client gives up (`maxRetries`, ≈ 30 s), after which Bun never reconnects.
 *   The link then calls `connect()` itself, with backoff, forever.
 * - After a reconnect the subscriber is not re-SUBSCRIBEd, and a listener
 *   subscribed again is kept *beside* the old one (the same function is then
 *   called twice per message). The link subscribes again on every connect
 *   with a fresh listener and lets only the newest generation through.
 * - After a Redis restart the script cache is empty: EVALSHA falls back to EVAL.
 *
 * Nothing here throws for Redis trouble: callers get `{ ok: false, reason }`,
 * because no Redis error may ever fail a message (design A.8).
 */
import { RedisClient } from "bun";
import { log } from "../log.ts";

export type RedisReply<T = unknown> = { ok: true; value: T } | { ok: false; reason: "down" | "timeout" | "error"; message: string };

export interface RedisLinkOptions {
  /** Per-command deadline; a renewal that cannot be proven by then counts as failed. Default 1000 ms. */
  commandTimeoutMs?: number;
  /** Connection attempt deadline. Default 1000 ms. */
  connectTimeoutMs?: number;
  /** Bun's own reconnect attempts before it gives up and the link takes over (Bun's default 20 ≈ 30 s); tests lower it to reach that path. */
  maxRetries?: number;
}

/** A Lua script, sent by hash after the first use. */
export class Script {
  readonly sha: string;
  constructor(readonly name: string, readonly source: string) {
    this.sha = new Bun.CryptoHasher("sha1").update(source).digest("hex");
  }
}

/** One Bun client that is kept connected: reconnects after Bun has given up, and reports every (re)connect. */
class Connection {
  readonly client: RedisClient;
  private closed = false;
  private backoff = 100;
  private retry: ReturnType<typeof setTimeout> | null = null;

  constructor(url: string, opts: RedisLinkOptions, private onUp: () => void, private role: string) {
    this.client = new RedisClient(url, {
      enableOfflineQueue: false,
      connectionTimeout: opts.connectTimeoutMs ?? 1000,
      autoReconnect: true,
      ...(opts.maxRetries === undefined ? {} : { maxRetries: opts.maxRetries }),
    });
    this.client.onconnect = () => {
      this.backoff = 100;
      this.onUp();
    };
    // Fires only when Bun has stopped trying (or on an idle timeout): from here on, reconnecting is ours.
    this.client.onclose = (err) => {
      if (this.closed) return;
      log.debug("cluster redis connection closed; reconnecting", { role: this.role, err });
      this.schedule();
    };
  }

  start(): void {
    this.client.connect().catch(() => this.schedule());
  }

  private schedule(): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (this.closed || this.client.connected) return;
      this.client.connect().catch(() => this.schedule());
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, 2000);
  }

  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    try {
      this.client.close();
    } catch {}
  }
}

export class RedisLink {
  private readonly cmd: Connection;
  private readonly sub: Connection;
  private readonly timeoutMs: number;
  private readonly connectListeners: (() => void)[] = [];
  private readonly channels = new Map<string, (message: string) => void>();
  private generation = 0;
  /** Set by close(): callers that retry until Redis answers stop then. */
  closed = false;

  constructor(readonly url: string, opts: RedisLinkOptions = {}) {
    this.timeoutMs = opts.commandTimeoutMs ?? 1000;
    this.cmd = new Connection(url, opts, () => this.connectListeners.forEach((f) => f()), "command");
    this.sub = new Connection(url, opts, () => this.resubscribe(), "subscriber");
  }

  /** Starts connecting; never waits for Redis, which may well be down when a node starts. */
  start(): this {
    this.cmd.start();
    this.sub.start();
    return this;
  }

  /** True while the command connection is up (it may still be about to find out otherwise). */
  get up(): boolean {
    return this.cmd.client.connected;
  }

  /** Runs on every connect of the command connection, the first one included (re-assert leases here). */
  onConnect(fn: () => void): void {
    this.connectListeners.push(fn);
  }

  async call<T = unknown>(command: string, args: string[]): Promise<RedisReply<T>> {
    if (this.closed) return { ok: false, reason: "down", message: "link closed" };
    if (!this.cmd.client.connected) return { ok: false, reason: "down", message: "not connected" };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<RedisReply<T>>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, reason: "timeout", message: `${command}: no answer in ${this.timeoutMs} ms` }), this.timeoutMs);
    });
    const answer = this.cmd.client.send(command, args).then(
      (value) => ({ ok: true, value }) as RedisReply<T>,
      (e: any) => ({ ok: false, reason: e?.code === "ERR_REDIS_SERVER_ERROR" ? "error" : "down", message: String(e?.message ?? e) }) as RedisReply<T>,
    );
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** EVALSHA, and EVAL when Redis has forgotten the script (first use, or a restart emptied its cache). */
  async script<T = unknown>(s: Script, keys: string[], args: (string | number)[]): Promise<RedisReply<T>> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    const r = await this.call<T>("EVALSHA", [s.sha, ...tail]);
    if (r.ok || r.reason !== "error" || !r.message.includes("NOSCRIPT")) return r;
    return this.call<T>("EVAL", [s.source, ...tail]);
  }

  /** Subscribes now and after every reconnect; pub/sub is at-most-once, so callers also poll what matters. */
  subscribe(channel: string, listener: (message: string) => void): void {
    this.channels.set(channel, listener);
    if (this.sub.client.connected) this.subscribeOne(channel, this.generation);
  }

  private resubscribe(): void {
    const gen = ++this.generation;
    for (const channel of this.channels.keys()) this.subscribeOne(channel, gen);
  }

  private subscribeOne(channel: string, gen: number): void {
    // Bun keeps the listeners of earlier connections and calls them too: only the newest generation passes.
    this.sub.client
      .subscribe(channel, (message) => {
        if (gen === this.generation) this.channels.get(channel)?.(message);
      })
      .catch((err) => log.debug("cluster redis subscribe failed; retried on the next connect", { channel, err }));
  }

  close(): void {
    this.closed = true;
    this.cmd.close();
    this.sub.close();
  }
}
