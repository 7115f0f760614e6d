/**
 * A 1:1 chat's peer in the header: online / last seen (PROTOCOL.md §6.10),
 * typing, and the contact and block buttons (§6.11). The page watches only
 * the open chat's peer (presence.sub is leased per open chat; the SDK renews
 * it and subscribes again after a reconnect) and says whether this device is
 * in use: active while the page is visible, idle when it is hidden.
 *
 * Presence is mutual and, by the server's default, for contacts only: both
 * accounts must have each other as contacts to see each other's online state
 * and last seen. A watch the rules refuse is not kept by the SDK, so the page
 * asks again when it may have become allowed: when the chat opens, after a
 * contact is added or a block lifted, when the page becomes visible, and
 * every RETRY_WATCH_MS while the open chat's peer is not watched (the peer
 * adding us, or lifting its block, tells us nothing: there is no
 * subscription to push it on).
 */
import { ServerError, type SwitchboardClient } from "../../src/client/browser.ts";
import { errorText, h, status } from "./dom.ts";
import type { People } from "./people.ts";

/**
 * How often a refused watch of the open chat's peer is asked again: one presence.sub per open chat, towards a
 * stranger one of its 20 tokens a minute (presence.stranger_rate), so 2 a minute leaves the rest for the user.
 */
const RETRY_WATCH_MS = 30_000;

export class PeerControls {
  private watched: string | null = null;

  constructor(
    private readonly client: SwitchboardClient,
    private readonly people: People,
    private readonly render: () => void,
    /** A line of the page's own in a chat (ChatScreen.system). */
    private readonly line: (chatId: string, text: string) => void,
  ) {
    client.on("presence", (v) => {
      people.presence(v);
      render();
    });
    client.on("typing", (t) => {
      people.typed(t.account, t.state);
      render();
    });
    const inUse = () => void client.setPresence(document.visibilityState === "visible" ? "active" : "idle").catch(() => {});
    document.addEventListener("visibilitychange", () => {
      inUse();
      if (document.visibilityState === "visible" && this.watched) void this.watch(this.watched);
    });
    inUse(); // before the login too: the SDK keeps it and sends it after every login
    setInterval(() => {
      if (this.watched && client.isReady && !client.presenceView(this.watched)) void this.watch(this.watched);
    }, RETRY_WATCH_MS);
  }

  /** Blocks and contacts, from the server (they are the account's, shared by its devices). */
  async load(): Promise<void> {
    const [blocked, contacts] = await Promise.all([this.client.blocked(), this.client.contacts()]);
    for (const a of blocked) this.people.block(a);
    for (const a of contacts) this.people.contacts.add(a);
    this.render();
  }

  /** The chat shown changed (or its peer's rules did): watch its peer, and no one else. */
  follow(open: string | null, again = false): void {
    const target = this.people.watchTarget(open);
    if (target === this.watched && !again) return;
    if (this.watched && this.watched !== target) {
      const old = this.watched;
      this.people.presence({ account: old });
      if (this.client.isReady) void this.client.unwatch([old]).catch(() => {});
    }
    this.watched = target;
    if (target) void this.watch(target);
  }

  private async watch(account: string): Promise<void> {
    if (!this.client.isReady) return; // the chat opened before the login: the ready's render follows it again
    try {
      for (const v of await this.client.watch([account])) if (v.account === this.watched) this.people.presence(v);
    } catch {
      // rate_limited towards a stranger, or the connection went: nothing shown, as for a hidden state
    }
    this.render();
  }

  /** The header's part of a 1:1 chat: presence, typing, the contact and block buttons. */
  header(peer: string, stopped: boolean): (HTMLElement | null)[] {
    if (peer === this.people.me) return []; // a chat with our own account (our other devices): no presence, no contact, no block
    const blocked = this.people.blocked.has(peer);
    const contact = this.people.contacts.has(peer);
    return [
      h("span", { id: "presence", class: "presence" }, this.people.presenceText(peer, Date.now())),
      h("span", { id: "typing", class: "typing" }, this.people.isTyping(peer) ? "typing…" : ""),
      blocked ? null : h("button", { id: "contact-button", type: "button", disabled: stopped, onclick: () => void this.toggleContact(peer) }, contact ? "Remove contact" : "Add contact"),
      h("button", { id: "block-button", type: "button", disabled: stopped, onclick: () => void this.toggleBlock(peer) }, blocked ? "Unblock" : "Block"),
    ];
  }

  /** Under the header of a chat with a blocked account: what the block does, and the way out. */
  banner(peer: string, stopped: boolean): HTMLElement | null {
    if (!this.people.blocked.has(peer)) return null;
    return h("p", { id: "blocked", class: "blocked" },
      `You blocked ${peer}: neither of you can send the other messages, or see the other's online state, last seen or typing. `,
      h("button", { id: "unblock-button", type: "button", disabled: stopped, onclick: () => void this.toggleBlock(peer) }, "Unblock"));
  }

  private async toggleContact(peer: string): Promise<void> {
    try {
      if (this.people.contacts.has(peer)) {
        await this.client.removeContacts([peer]);
        this.people.contacts.delete(peer);
      } else {
        await this.client.addContacts([peer]);
        this.people.contacts.add(peer);
      }
    } catch (e) {
      status(`the contact list was not changed: ${errorText(e)}`, true);
    }
    this.follow(peer, true); // a new contact may be seen now (if it has us too)
    this.render();
  }

  private async toggleBlock(peer: string): Promise<void> {
    const unblock = this.people.blocked.has(peer);
    try {
      if (unblock) await this.client.unblock(peer);
      else await this.client.block(peer);
    } catch (e) {
      return status(`${peer} was not ${unblock ? "unblocked" : "blocked"}: ${errorText(e)}`, true);
    }
    if (unblock) this.people.unblock(peer);
    else this.people.block(peer); // the server ends our watch of them (pst end: privacy) and theirs of us
    this.line(peer, unblock ? `you unblocked ${peer}` : `you blocked ${peer}`);
    this.follow(peer, true);
  }

  /** A send refused by a block (either side's): the server's words as a line in the chat, besides the ! mark. */
  refused(chatId: string, e: unknown): boolean {
    if (!(e instanceof ServerError) || e.code !== "blocked") return false;
    this.line(chatId, `not sent: ${e.message.slice(e.code.length + 2)}`); // ServerError's message is "code: text"
    return true;
  }
}
