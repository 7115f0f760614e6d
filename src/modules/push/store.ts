/**
 * The push module's own store: each device's push endpoint, in push.db (a
 * file from core, ctx.database). One endpoint per device; registering again
 * replaces it and stamps `registered_at`, which is what lets a late
 * "invalid token" answer about the old endpoint leave a fresh one alone.
 *
 * A device also has a second slot, for an APNs VoIP (PushKit) token
 * (`push.set {p: "apns", voip: true}`): iOS gives an app two tokens, and a
 * VoIP one may only be used to ring (an app that gets a VoIP push and
 * reports no call is ended by iOS), so the two never share a slot: messages
 * wake the regular endpoint, `ring` prefers the VoIP token.
 *
 * Every endpoint is also held in memory: the queue's commit asks, for each
 * item to an offline device, whether that device can be woken at all, and
 * that must not cost a SELECT (about 100 bytes per registered device).
 */
import type { Database, Statement } from "bun:sqlite";
import type { PushTarget } from "../../core/push/types.ts";
import type { PushEndpoint } from "../../protocol/stanzas.ts";

export const PUSH_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS endpoints (
     account TEXT NOT NULL, device INTEGER NOT NULL, p TEXT NOT NULL, token TEXT NOT NULL DEFAULT '',
     endpoint TEXT NOT NULL DEFAULT '', p256dh TEXT NOT NULL DEFAULT '', auth TEXT NOT NULL DEFAULT '',
     topic TEXT NOT NULL DEFAULT '', voip INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL,
     PRIMARY KEY (account, device)) WITHOUT ROWID;`,
  // 2: VoIP tokens get their own slot (before, one registered with voip: true took the device's only one and got message
  // wake-ups as VoIP pushes); an existing one moves there, leaving the device no message endpoint until it registers one.
  `CREATE TABLE IF NOT EXISTS voip (account TEXT NOT NULL, device INTEGER NOT NULL, token TEXT NOT NULL, registered_at INTEGER NOT NULL,
     PRIMARY KEY (account, device)) WITHOUT ROWID;
   INSERT OR REPLACE INTO voip SELECT account, device, token, registered_at FROM endpoints WHERE p = 'apns' AND voip = 1;
   DELETE FROM endpoints WHERE p = 'apns' AND voip = 1;`,
] as const;

interface Row { account: string; device: number; p: string; token: string; endpoint: string; p256dh: string; auth: string; topic: string; voip: number; registered_at: number }

export interface Registered {
  endpoint: PushEndpoint;
  target: PushTarget;
}

const key = (account: string, device: number) => `${account}\u0000${device}`;

function targetOf(e: PushEndpoint, at: number): PushTarget {
  switch (e.p) {
    case "apns": return e.voip ? { provider: "apns", token: e.token, registeredAt: at, voip: true } : { provider: "apns", token: e.token, registeredAt: at };
    case "fcm": return { provider: "fcm", token: e.token, registeredAt: at };
    case "webhook": return { provider: "webhook", token: e.token, registeredAt: at };
    case "webpush": return { provider: "webpush", endpoint: e.endpoint, p256dh: e.p256dh, auth: e.auth, registeredAt: at };
  }
}

function endpointOf(r: Row): PushEndpoint {
  switch (r.p) {
    case "apns": {
      const e: PushEndpoint = { p: "apns", token: r.token };
      if (r.topic) e.topic = r.topic;
      if (r.voip) e.voip = true;
      return e;
    }
    case "fcm": return { p: "fcm", token: r.token };
    case "webhook": return { p: "webhook", token: r.token };
    case "webpush": return { p: "webpush", endpoint: r.endpoint, p256dh: r.p256dh, auth: r.auth };
    default: throw new Error(`push.db: endpoint of ${r.account}/${r.device} has unknown kind ${JSON.stringify(r.p)}`);
  }
}

/** Which of a device's two slots (above). */
export type Slot = "regular" | "voip";

export class EndpointStore {
  private all = new Map<string, Registered>();
  private voips = new Map<string, Registered>();
  private put: Statement;
  private del: Statement;
  private putVoip: Statement;
  private delVoip: Statement;

  constructor(private readonly db: Database) {
    this.put = db.prepare(
      `INSERT INTO endpoints (account, device, p, token, endpoint, p256dh, auth, topic, voip, registered_at) VALUES (?,?,?,?,?,?,?,?,?,?)
       ON CONFLICT (account, device) DO UPDATE SET p = excluded.p, token = excluded.token, endpoint = excluded.endpoint, p256dh = excluded.p256dh,
         auth = excluded.auth, topic = excluded.topic, voip = excluded.voip, registered_at = excluded.registered_at`,
    );
    this.del = db.prepare("DELETE FROM endpoints WHERE account = ? AND device = ?");
    this.putVoip = db.prepare(
      "INSERT INTO voip (account, device, token, registered_at) VALUES (?,?,?,?) ON CONFLICT (account, device) DO UPDATE SET token = excluded.token, registered_at = excluded.registered_at",
    );
    this.delVoip = db.prepare("DELETE FROM voip WHERE account = ? AND device = ?");
    this.load("", []);
  }

  /** Reads endpoints from the file into memory: every one (`where` ""), or those of some accounts. */
  private load(where: string, args: string[]): void {
    for (const r of this.db.query(`SELECT * FROM endpoints ${where}`).iterate(...args) as IterableIterator<Row>) {
      this.all.set(key(r.account, r.device), { endpoint: endpointOf(r), target: targetOf(endpointOf(r), r.registered_at) });
    }
    for (const r of this.db.query(`SELECT * FROM voip ${where}`).iterate(...args) as IterableIterator<{ account: string; device: number; token: string; registered_at: number }>) {
      const e: PushEndpoint = { p: "apns", token: r.token, voip: true };
      this.voips.set(key(r.account, r.device), { endpoint: e, target: targetOf(e, r.registered_at) });
    }
  }

  /** These accounts' endpoints as the file has them now (a cluster shard move wrote or deleted their rows: shard:rows). */
  reload(accounts: readonly string[]): void {
    for (const a of accounts) {
      const prefix = `${a}\u0000`;
      for (const m of [this.all, this.voips]) for (const k of [...m.keys()]) if (k.startsWith(prefix)) m.delete(k);
      this.load("WHERE account = ?", [a]);
    }
  }

  /** The device's regular endpoint (what messages wake). */
  get(account: string, device: number): Registered | undefined {
    return this.all.get(key(account, device));
  }

  /** The device's VoIP (PushKit) token, if it registered one: for rings only. */
  getVoip(account: string, device: number): Registered | undefined {
    return this.voips.get(key(account, device));
  }

  /**
   * Registers or replaces the slot the endpoint is for (an APNs `voip: true` token: the VoIP slot; anything else: the
   * regular one); `at` must grow for the same slot (a re-registration of the same token counts as a refresh).
   */
  set(account: string, device: number, e: PushEndpoint, at: number): Registered {
    const voip = e.p === "apns" && e.voip === true;
    const prev = (voip ? this.voips : this.all).get(key(account, device));
    const stamp = prev !== undefined && at <= prev.target.registeredAt ? prev.target.registeredAt + 1 : at;
    if (voip) {
      this.putVoip.run(account, device, e.token, stamp);
      const r = { endpoint: e, target: targetOf(e, stamp) };
      this.voips.set(key(account, device), r);
      return r;
    }
    const t = e.p === "apns" ? { token: e.token, topic: e.topic ?? "", voip: e.voip ? 1 : 0 } : { token: "token" in e ? e.token : "", topic: "", voip: 0 };
    const w = e.p === "webpush" ? e : { endpoint: "", p256dh: "", auth: "" };
    this.put.run(account, device, e.p, t.token, w.endpoint, w.p256dh, w.auth, t.topic, t.voip, stamp);
    const r = { endpoint: e, target: targetOf(e, stamp) };
    this.all.set(key(account, device), r);
    return r;
  }

  /** Removes one slot, or both (the default); true if there was anything to remove. */
  remove(account: string, device: number, slot?: Slot): boolean {
    let had = false;
    if (slot !== "voip") {
      this.all.delete(key(account, device));
      had = this.del.run(account, device).changes > 0;
    }
    if (slot !== "regular") {
      this.voips.delete(key(account, device));
      had = this.delVoip.run(account, device).changes > 0 || had;
    }
    return had;
  }

  /** Every endpoint of an account (it was deleted); returns the devices that had one. */
  removeAccount(account: string): number[] {
    const devices: number[] = [];
    const prefix = `${account}\u0000`;
    for (const k of new Set([...this.all.keys(), ...this.voips.keys()])) if (k.startsWith(prefix)) devices.push(Number(k.slice(prefix.length)));
    for (const d of devices) this.remove(account, d);
    return devices;
  }

  get size(): number {
    return this.all.size;
  }
}
