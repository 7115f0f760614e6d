/**
 * What a groups worker (groups-worker.ts) knows of its groups: each group's
 * members (this worker's, and every member's account), its senders, and per
 * sender and message the bookkeeping the loss check needs (written, `sent`,
 * copies delivered, receipts back, which members have it).
 */
import type { LeanConn } from "./lean.ts";
import type { Identity } from "./setup.ts";

/** Message n of sender s has the wire id s × ID_BASE + n. */
export const ID_BASE = 100_000_000;
export const F_WRITTEN = 1;
export const F_ACKED = 2; // `sent` received

export class Member {
  conn: LeanConn | null = null;
  lastSeq = 0;
  /** Pending iq answers on this connection, by iq id. */
  iqs = new Map<number, (r: Record<string, any>) => void>();
  iqNext = 1;
  /** index: the member's position in the whole group (the creator is 0, the senders 0..S-1). */
  constructor(readonly id: Identity, readonly group: Group, readonly index: number) {}
}

export class Sender {
  next = 1;
  inflight = 0;
  quota = 0;
  done = false;
  flags = new Uint8Array(1024);
  times = new Float64Array(1024);
  /** Copies delivered and dlv receipts back, per message. */
  copies = new Uint16Array(1024);
  rcpts = new Uint16Array(1024);
  /** Which members have message n (one byte per member), allocated when n is sent. */
  seen: (Uint8Array | undefined)[] = [];
  /**
   * member null: the sender (member j of the group) lives in another worker (--spread); this record only
   * counts its copies to local members, and `next` is one past the highest message number seen.
   */
  constructor(readonly group: Group, readonly j: number, readonly idx: number, readonly member: Member | null) {}
  get idBase(): number {
    return this.idx * ID_BASE;
  }
  grow(): void {
    const n = this.flags.length * 2;
    const f = new Uint8Array(n); f.set(this.flags); this.flags = f;
    const t = new Float64Array(n); t.set(this.times); this.times = t;
    const c = new Uint16Array(n); c.set(this.copies); this.copies = c;
    const r = new Uint16Array(n); r.set(this.rcpts); this.rcpts = r;
  }
}

/** A remote sender's numbers only ever come from copies; past this one a frame is garbage, not a message. */
export const REMOTE_MAX_N = 1 << 24;

export class Group {
  g = "";
  template: Uint8Array | null = null;
  /** This worker's members (all of them without --spread). */
  members: Member[] = [];
  /** Every member's account, by member index (the creator adds them). */
  accounts: string[] = [];
  /** The group's sender records: local ones send; remote ones (--spread) count copies only. */
  senders: Sender[] = [];
  constructor(readonly index: number) {}
  /** Members of the whole group, wherever they live. */
  get size(): number {
    return this.accounts.length;
  }
  /** The home worker: the creator (member 0) is here. */
  get home(): boolean {
    return this.members.length > 0 && this.members[0]!.index === 0;
  }
}

/** Copies each message must reach: every member of the whole group but its sender. */
export const fanout = (gr: Group) => gr.size - 1;
