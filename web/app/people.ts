/**
 * The web client's facts about other accounts and this account's devices,
 * without the DOM or the network: what may be seen of a peer's presence
 * (PROTOCOL.md §6.10; each `presence` event of the SDK is the whole view),
 * who is typing, whom this account blocks (§6.11) and has as contacts, and
 * the device list (`devices`). chat.ts and devices.ts render from it.
 *
 * Nothing here is kept in IndexedDB: the server owns contacts and blocks
 * (read at every sign-in), and presence belongs to the connection.
 */
import type { PresenceView } from "../../src/client/presence.ts";

/** One device of this account, as the `devices` iq lists it (names are the account's own). */
export interface Device {
  d: number;
  name?: string;
  /** When it was enrolled or linked, ms since the epoch. */
  created: number;
  /** Its key version: 0 when it never published end-to-end keys. */
  kv: number;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const two = (n: number) => String(n).padStart(2, "0");
const dayOf = (d: Date) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();

/**
 * "today at 14:05", "yesterday at 09:30", "28 Nov at 10:00", "28 Nov 2025" (another year), in the browser's
 * time zone. `now` is passed in so that the text is a function of its inputs.
 */
export function whenText(ts: number, now: number): string {
  const t = new Date(ts);
  const n = new Date(now);
  const at = `${two(t.getHours())}:${two(t.getMinutes())}`;
  // Calendar days, not 24-hour spans: 23:50 yesterday is "yesterday" at 00:10 today. Daylight saving makes a day
  // 23 or 25 hours, hence the rounding.
  const days = Math.round((dayOf(n) - dayOf(t)) / 86_400_000);
  if (days <= 0) return `today at ${at}`; // a little ahead of this clock (the server's is another): still today
  if (days === 1) return `yesterday at ${at}`;
  const date = `${t.getDate()} ${MONTHS[t.getMonth()]}`;
  return t.getFullYear() === n.getFullYear() ? `${date} at ${at}` : `${date} ${t.getFullYear()}`;
}

export class People {
  /** The latest view of each watched account (absent: not watched, or the watch ended). */
  private readonly views = new Map<string, PresenceView>();
  private readonly typing = new Set<string>();
  readonly blocked = new Set<string>();
  readonly contacts = new Set<string>();
  devices: Device[] = [];

  constructor(readonly me: string) {}

  /** A `presence` event, or a watch's answer: the whole view replaces the last; an ended watch shows nothing. */
  presence(v: PresenceView): void {
    if (v.ended || (v.online === undefined && v.lastSeen === undefined)) this.views.delete(v.account);
    else this.views.set(v.account, { account: v.account, online: v.online, lastSeen: v.lastSeen });
  }

  /** A typing notice (an expired `typing` comes as `paused`). */
  typed(account: string, state: "typing" | "paused"): void {
    if (state === "typing") this.typing.add(account);
    else this.typing.delete(account);
  }

  isTyping(account: string): boolean {
    return this.typing.has(account) && !this.blocked.has(account);
  }

  /** What a 1:1 chat's header says of the peer: "online", "last seen today at 14:05", or "" (hidden, unknown, blocked). */
  presenceText(account: string, now: number): string {
    if (this.blocked.has(account)) return ""; // the server ends the watch too; this covers the frames in between
    const v = this.views.get(account);
    if (v?.online) return "online";
    if (v?.lastSeen !== undefined) return `last seen ${whenText(v.lastSeen, now)}`;
    return "";
  }

  /**
   * The account to watch while chat `open` is shown: its peer, for a 1:1 chat with someone else that this
   * account does not block (a block's subscription is refused anyway: `no`); null for none.
   */
  watchTarget(open: string | null): string | null {
    if (open === null || open.startsWith("#") || open === this.me || this.blocked.has(open)) return null;
    return open;
  }

  block(account: string): void {
    this.blocked.add(account);
    this.views.delete(account);
    this.typing.delete(account);
  }

  unblock(account: string): void {
    this.blocked.delete(account);
  }

  /** The device list as shown: ascending id, this device marked; a device without a name is its id. */
  deviceRows(myDevice: number, now: number): { d: number; label: string; mine: boolean; e2e: boolean }[] {
    return [...this.devices]
      .sort((a, b) => a.d - b.d)
      .map((x) => ({
        d: x.d,
        mine: x.d === myDevice,
        e2e: x.kv > 0,
        label: `${x.name ? `${x.name} · ` : ""}device ${x.d} · linked ${whenText(x.created, now)}${x.d === myDevice ? " · this browser" : ""}`,
      }));
  }
}
