/**
 * The presence part of the SDK's API (docs/PROTOCOL.md §6.6, §6.10, §6.11):
 * contacts, privacy, blocks, this device's active/idle state, leased
 * subscriptions to the accounts whose chats are open, and typing.
 *
 * The SDK keeps what must outlive a connection and sends it again after
 * every login: the device's state and the watched accounts. A watch is
 * renewed at half its lease, so a live client never sees `end: "lease"`.
 * Typing notices expire here: a `typing` not refreshed within
 * TYPING_TTL_MS is reported as `paused` with `expired: true`.
 */
import type { PresS, Pst } from "../protocol/stanzas.ts";
import { GroupCalls } from "./groups.ts";

export type PrivacyPolicy = "everyone" | "contacts" | "nobody";
export interface Privacy {
  /** Who sees last seen. */
  ls: PrivacyPolicy;
  /** Who sees the online state. */
  online: PrivacyPolicy;
}

/** What we may see of a watched account; an absent field is one its owner (or our own policy) hides from us. */
export interface PresenceView {
  account: string;
  online?: boolean;
  /** Last seen, ms since the epoch, minute-granular. */
  lastSeen?: number;
  /** The watch ended: `privacy` (the rules no longer allow it), `lease` (not renewed). */
  ended?: "privacy" | "lease";
}

/** A typing notice lapses this long after the last `typing` (the sender repeats it every few seconds). */
export const TYPING_TTL_MS = 10_000;

export abstract class PresenceCalls extends GroupCalls {
  private watched = new Set<string>();
  private views = new Map<string, PresenceView>();
  private deviceState: "active" | "idle" | null = null;
  private renewTimer: ReturnType<typeof setInterval> | null = null;
  private typingTimers = new Map<string, ReturnType<typeof setTimeout>>();

  abstract override request<T = any>(op: string, args?: Record<string, unknown>): Promise<T>;

  addContacts(accounts: string[]): Promise<{ n: number }> {
    return this.request("contacts.add", { u: accounts });
  }
  removeContacts(accounts: string[]): Promise<{ n: number }> {
    return this.request("contacts.remove", { u: accounts });
  }
  async contacts(): Promise<string[]> {
    return (await this.request<{ u: string[] }>("contacts.list")).u;
  }
  privacy(): Promise<Privacy> {
    return this.request("privacy.get");
  }
  setPrivacy(p: Partial<Privacy>): Promise<Privacy> {
    return this.request("privacy.set", p);
  }
  async block(account: string): Promise<void> {
    await this.request("block.add", { u: account });
  }
  async unblock(account: string): Promise<void> {
    await this.request("block.remove", { u: account });
  }
  async blocked(): Promise<string[]> {
    return (await this.request<{ u: string[] }>("block.list")).u;
  }

  /** One look at an account, without watching it. */
  async presenceOf(account: string): Promise<PresenceView> {
    const r = await this.request<{ online?: boolean; ls?: number }>("presence", { u: account });
    return view(account, r);
  }

  /** Says whether the user is using this device (foreground) or not; kept and sent again after a reconnect. */
  async setPresence(state: "active" | "idle"): Promise<void> {
    this.deviceState = state;
    if (this.isReady) await this.request("presence.state", { s: state });
  }

  /**
   * Watches accounts (their chats are open): resolves with what may be seen of
   * each now; changes come as `presence` events until `unwatch`. Accounts that
   * may not be watched come back with no fields and are not kept.
   */
  async watch(accounts: string[]): Promise<PresenceView[]> {
    const r = await this.request<{ lease: number; p: ({ u: string; online?: boolean; ls?: number })[]; no: string[] }>("presence.sub", { u: accounts });
    for (const x of r.p) {
      const v = view(x.u, x);
      const before = this.views.get(x.u);
      this.watched.add(x.u);
      this.views.set(x.u, v);
      // A renewal (after a reconnect, say) that finds another state than the last one known: a change the app missed.
      if (before && (before.online !== v.online || before.lastSeen !== v.lastSeen)) this.emit("presence", v);
    }
    for (const u of r.no) this.watched.delete(u);
    this.armRenewal(r.lease);
    return [...r.p.map((x) => view(x.u, x)), ...r.no.map((u) => ({ account: u }))];
  }

  async unwatch(accounts: string[]): Promise<void> {
    for (const a of accounts) {
      this.watched.delete(a);
      this.views.delete(a);
    }
    if (this.watched.size === 0) this.disarmRenewal();
    if (this.isReady) await this.request("presence.unsub", { u: accounts });
  }

  /** The last view of a watched account. */
  presenceView(account: string): PresenceView | undefined {
    return this.views.get(account);
  }

  private armRenewal(leaseMs: number): void {
    this.disarmRenewal();
    this.renewTimer = setInterval(() => {
      if (this.isReady && this.watched.size) this.watch([...this.watched]).catch((e) => this.emit("error", e));
    }, Math.max(50, Math.floor(leaseMs / 2)));
    this.renewTimer.unref?.();
  }

  private disarmRenewal(): void {
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
  }

  /** After every login: the device's state and the watches, again (the server forgot them with the connection). */
  protected presenceReady(): void {
    if (this.deviceState) this.request("presence.state", { s: this.deviceState }).catch((e) => this.emit("error", e));
    if (this.watched.size) this.watch([...this.watched]).catch((e) => this.emit("error", e));
  }

  protected onPst(s: Pst): void {
    const v: PresenceView = view(s.u, s);
    if (s.end) {
      v.ended = s.end;
      this.watched.delete(s.u);
      this.views.delete(s.u);
      if (this.watched.size === 0) this.disarmRenewal();
    } else this.views.set(s.u, v);
    this.emit("presence", v);
  }

  protected onTyping(s: PresS): void {
    const key = `${s.u}\u0000${s.d}`;
    const t = this.typingTimers.get(key);
    if (t) clearTimeout(t);
    this.typingTimers.delete(key);
    if (s.s === "typing") {
      const timer = setTimeout(() => {
        this.typingTimers.delete(key);
        this.emit("typing", { account: s.u, device: s.d, state: "paused", expired: true });
      }, TYPING_TTL_MS);
      timer.unref?.();
      this.typingTimers.set(key, timer);
    }
    this.emit("typing", { account: s.u, device: s.d, state: s.s });
  }

  protected stopPresence(): void {
    this.disarmRenewal();
    for (const t of this.typingTimers.values()) clearTimeout(t);
    this.typingTimers.clear();
  }

  abstract get isReady(): boolean;
}

function view(account: string, r: { online?: boolean; ls?: number }): PresenceView {
  const v: PresenceView = { account };
  if (r.online !== undefined) v.online = r.online;
  if (r.ls !== undefined) v.lastSeen = r.ls;
  return v;
}
