/**
 * The chat screen: the chat list (1:1 and groups) and the open chat, with
 * ✓ sent / ✓✓ delivered / read marks (model.ts derives them from the
 * receipts), the peer's presence, typing and block (peer.ts), the safety
 * number, and attachments; the account's devices and privacy (devices.ts,
 * privacy.ts) under its name. Every message goes through the Messenger
 * (SecureClient: end-to-end encrypted as the CLI's); the client underneath
 * carries only receipts, read markers, typing, presence, contacts, blocks
 * and group membership, which are not message content.
 */
import { formatSafetyNumber, safeFileName, type Attachment, type Receipt, type Sent, type SwitchboardClient } from "../../src/client/browser.ts";
import type { SecureEvents } from "../../src/client/secure-types.ts";
import { DevicesPanel } from "./devices.ts";
import { errorText, h, status } from "./dom.ts";
import { keepIncoming, keepReceipts } from "./history.ts";
import { Chats, MARK_TEXT, type Chat, type ChatMessage } from "./model.ts";
import { PeerControls } from "./peer.ts";
import { People } from "./people.ts";
import { PrivacyPanel } from "./privacy.ts";

/** What the chat screen needs of SecureClient (main.ts adapts the browser one). */
export interface Messenger {
  on<K extends keyof SecureEvents>(event: K, fn: (...args: SecureEvents[K]) => void): unknown;
  send(to: string, text: string): Promise<Sent>;
  sendGroup(group: string, text: string): Promise<Sent>;
  safetyNumber(account: string): Promise<string>;
  sendFile(to: string, file: File): Promise<{ sent: Sent; attachment: Attachment }>;
  /** The attachment's plaintext, checked (digest, MAC). */
  fetchFile(att: Attachment): Promise<Blob>;
  /** SecureClient.holdAck: from a message's handler, the ack waits for the returned function. */
  holdAck(): () => void;
}

/** How often a typing notice is repeated while the user types (the receiver drops one after 10 s: PROTOCOL.md §6.6). */
const TYPING_EVERY_MS = 3000;
/** Keystrokes stopped this long: `paused`, as the protocol asks (else the peer shows typing until its 10 s run out). */
const PAUSED_AFTER_MS = 5000;

export class ChatScreen {
  private open: string | null = null;
  private lastTyping = 0;
  private pauseTimer: ReturnType<typeof setTimeout> | null = null;
  private safety = new Map<string, string>();
  private renderQueued = false;
  private stopped = false;
  private files = new Map<string, string>(); // attachment id -> object URL
  readonly people: People;
  private readonly peer: PeerControls;
  private readonly devices: DevicesPanel;
  private readonly privacy: PrivacyPanel;

  constructor(
    private readonly root: HTMLElement,
    private readonly client: SwitchboardClient,
    private readonly secure: Messenger,
    readonly chats: Chats,
    private readonly persist: () => Promise<void>,
  ) {
    const me = client.account;
    this.people = new People(me);
    this.peer = new PeerControls(client, this.people, () => this.render(), (chat, text) => void this.system(chat, text));
    this.devices = new DevicesPanel(client, this.people, () => this.render());
    this.privacy = new PrivacyPanel(client, () => this.render(), () => this.peer.follow(this.open, true));
    keepIncoming(secure, chats, () => this.changed());
    secure.on("undecryptable", (u) => this.system(u.conversation, `a message from ${u.from} (device ${u.fromDevice}) could not be decrypted: ${u.reason}`));
    // About our own account: the status line (a chat with ourselves would be odd); about a peer: a line in its chat.
    const tell = (account: string, text: string) => (account === me ? status(text) : this.system(account, text));
    secure.on("identityChanged", (c) => {
      this.safety.clear(); // every safety number with this account, or (ours) every one, changed
      tell(c.account, `${c.account}'s device ${c.device} has a new security code: compare the safety number`);
    });
    secure.on("devicesChanged", (c) => {
      this.safety.clear();
      const what = [c.added.length ? `added device ${c.added.join(", ")}` : "", c.removed.length ? `removed device ${c.removed.join(", ")}` : ""].filter(Boolean).join(" and ");
      tell(c.account, `${c.account} ${what}: the safety number changed`);
    });
    client.on("device", (d) => status(d.op === "linked" ? `a new device (${d.device}${d.name ? `, "${d.name}"` : ""}) was linked to your account` : `your device ${d.device} was revoked`));
    secure.on("error", (e) => status(errorText(e), true));
    keepReceipts(client, chats, () => this.changed(), (r) => this.onReceipt(r));
    client.on("group", (ev) => {
      const release = client.holdAck(); // as keepIncoming's: the line is stored before the event is acked
      const c = this.chats.chat(ev.group, ev.name ?? ev.group);
      if (ev.name) c.name = ev.name;
      const them = ev.members.join(", ");
      const what = { create: "created the group", add: `added ${them}`, remove: `removed ${them}`, leave: "left", promote: `made ${them} an admin`, demote: `made ${them} no longer an admin`, rename: `renamed the group to "${ev.name ?? ""}"` }[ev.op];
      void this.system(ev.group, `${ev.by} ${what ?? ev.op}`).then(release);
    });
  }

  /** After the login: the groups this account is in (the server's list), as chats; its blocks and contacts. */
  async load(): Promise<void> {
    const [r] = await Promise.all([this.client.groups(), this.peer.load()]);
    for (const g of r.groups) this.chats.chat(g.g, g.name).name = g.name;
    this.peer.follow(this.open, true);
    this.render();
  }

  private system(chatId: string, text: string): Promise<void> {
    this.chats.add(chatId, { id: `sys-${Date.now()}-${Math.random()}`, from: "", mine: false, text, ts: Date.now(), seq: null, system: true });
    return this.changed();
  }

  private changed(): Promise<void> {
    const saved = this.stopped ? Promise.resolve() : this.persist();
    this.render();
    return saved;
  }

  /** A receipt marked in the chats (keepReceipts): a group's tally is asked again. */
  private onReceipt(r: Receipt): void {
    const c = this.chats.byId.get(r.with);
    if (c?.group && r.account !== this.client.account) this.refreshTally(c, r.seq);
  }

  /** Groups: "delivered to X of N, read by Y" (group.state) of our message `seq`; other members' seqs are refused (forbidden). */
  private refreshTally(c: Chat, seq: number): void {
    const m = c.messages.find((x) => x.mine && x.seq === seq);
    if (!m) return; // not ours, or our send has not resolved: it asks once it has
    this.client.messageState(c.id, seq).then(
      (t) => {
        c.tally[seq] = { n: t.n, delivered: t.delivered, read: t.read };
        this.changed();
      },
      () => {},
    );
  }

  /** For good: another tab has this device now (tabs.ts). Nothing is sent, marked or saved from here any more. */
  stop(): void {
    this.stopped = true;
    this.render();
  }

  openChat(id: string): void {
    if (this.open !== null && this.open !== id) this.paused(this.chats.chat(this.open));
    this.open = id;
    this.chats.chat(id);
    this.peer.follow(id);
    this.render();
  }

  /** Re-renders at the next frame (several events in one turn render once). */
  render(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.draw();
    });
  }

  /** Redraws both panes from the model; what is typed in any field, and the focus, survive it. */
  private draw(): void {
    const focused = document.activeElement?.id;
    const drafts = new Map<string, string>();
    for (const el of this.root.querySelectorAll<HTMLInputElement>("input[id]:not([type=file])")) drafts.set(el.id, el.value);
    const me = `${this.client.account} · device ${this.client.device}`;
    this.root.replaceChildren(
      h("aside", {},
        h("header", {},
          h("span", { id: "me" }, me),
          h("span", { class: "actions" },
            h("button", { id: "devices-button", type: "button", onclick: () => this.devices.toggle() }, "Devices"),
            h("button", { id: "privacy-button", type: "button", onclick: () => this.privacy.toggle() }, "Privacy"))),
        this.devices.view(this.stopped),
        this.privacy.view(this.stopped),
        this.newChatForm(),
        this.newGroupForm(),
        h("ul", { class: "chats", id: "chats" }, ...this.chats.list().map((c) => this.chatItem(c))),
      ),
      this.open ? this.chatPane(this.chats.chat(this.open)) : h("main", {}, h("p", { class: "empty" }, "Choose a chat, or start one with an account name.")),
    );
    for (const [id, v] of drafts) {
      const el = document.getElementById(id) as HTMLInputElement | null;
      if (el) el.value = v;
    }
    if (focused) document.getElementById(focused)?.focus();
    const list = document.getElementById("messages");
    if (list) list.scrollTop = list.scrollHeight; // the newest at the bottom, in view
    this.markRead();
  }

  /** The open chat's messages from others are read once shown in a visible page. */
  private markRead(): void {
    if (this.stopped || !this.open || document.visibilityState !== "visible") return;
    const c = this.chats.chat(this.open);
    const seq = this.chats.toMarkRead(c);
    if (c.unread) (c.unread = 0), this.persist();
    if (seq === 0 || !this.client.isReady) return;
    this.client.markRead(c.id, seq);
    c.markedRead = seq;
    this.persist();
  }

  private chatItem(c: Chat): HTMLLIElement {
    const last = c.messages.at(-1);
    return h("li", { "data-chat": c.id, class: c.id === this.open ? "open" : "", onclick: () => this.openChat(c.id) },
      h("span", {}, c.name, c.group ? h("span", { class: "badge" }, "group") : null, h("span", { class: "last" }, last ? last.text || (last.attachment ? `file: ${last.attachment.name ?? "file"}` : "") : "")),
      c.unread && c.id !== this.open ? h("span", { class: "unread" }, String(c.unread)) : null,
    );
  }

  private newChatForm(): HTMLFormElement {
    const peer = h("input", { id: "peer", placeholder: "account", autocomplete: "off" });
    return h("form", { id: "new-chat", onsubmit: (ev: Event) => {
      ev.preventDefault();
      const a = peer.value.trim();
      peer.value = "";
      if (a) this.openChat(a);
    } }, peer, h("button", { id: "start-chat" }, "Chat"));
  }

  private newGroupForm(): HTMLFormElement {
    const name = h("input", { id: "group-name", placeholder: "new group's name", autocomplete: "off" });
    const members = h("input", { id: "group-members", placeholder: "members: bob, carol", autocomplete: "off" });
    return h("form", { id: "new-group", onsubmit: async (ev: Event) => {
      ev.preventDefault();
      if (this.stopped) return;
      const list = members.value.split(/[\s,]+/).filter(Boolean);
      if (!name.value.trim()) return status("give the group a name", true);
      try {
        const g = await this.client.createGroup(name.value.trim(), list);
        this.chats.chat(g.g, name.value.trim());
        // By id: a redraw during the request replaced these fields (with what was typed in them).
        for (const id of ["group-name", "group-members"]) {
          const el = document.getElementById(id) as HTMLInputElement | null;
          if (el) el.value = "";
        }
        this.openChat(g.g);
        this.persist();
      } catch (e) {
        status(`the group was not created: ${errorText(e)}`, true);
      }
    } }, name, members, h("button", { id: "create-group", disabled: this.stopped }, "Create group"));
  }

  private chatPane(c: Chat): HTMLElement {
    const safety = this.safety.get(c.id);
    return h("main", { id: "chat", "data-chat": c.id },
      h("header", {},
        h("h2", { id: "chat-title" }, c.name, c.group ? h("span", { class: "badge" }, "group") : null),
        ...(c.group ? [this.memberForm(c)] : [...this.peer.header(c.id, this.stopped), h("button", { id: "safety-button", type: "button", onclick: () => this.showSafety(c.id) }, "Safety number")]),
      ),
      c.group ? null : this.peer.banner(c.id, this.stopped),
      safety ? h("pre", { id: "safety", class: "safety" }, `Safety number of ${this.client.account} and ${c.id}:\n`, h("span", { id: "safety-digits" }, formatSafetyNumber(safety))) : null,
      h("ol", { class: "messages", id: "messages" }, ...c.messages.map((m) => this.messageItem(c, m))),
      this.composer(c),
    );
  }

  /**
   * A group's header: add members (admins; the server refuses others with `forbidden`) and leave. New members
   * get our sender key before our next message; after a leave or removal SecureClient uses a new one.
   */
  private memberForm(c: Chat): HTMLFormElement {
    const who = h("input", { id: "add-members", placeholder: "add: dave, erin", autocomplete: "off" });
    const act = async (what: string, f: () => Promise<unknown>) => {
      if (this.stopped) return;
      try {
        await f();
      } catch (e) {
        status(`${what}: ${errorText(e)}`, true);
      }
    };
    return h("form", { id: "members", class: "members", onsubmit: (ev: Event) => {
      ev.preventDefault();
      const list = who.value.split(/[\s,]+/).filter(Boolean);
      if (list.length) void act("not added", () => this.client.addMembers(c.id, list));
      const el = document.getElementById("add-members") as HTMLInputElement | null;
      if (el) el.value = "";
    } }, who, h("button", { id: "add-member", disabled: this.stopped }, "Add"),
      h("button", { id: "leave-group", type: "button", disabled: this.stopped, onclick: () => void act("could not leave", () => this.client.leaveGroup(c.id)) }, "Leave"));
  }

  private messageItem(c: Chat, m: ChatMessage): HTMLLIElement {
    if (m.system) return h("li", { class: "system" }, m.text);
    const mark = m.mine ? this.chats.mark(c, m) : null;
    return h("li", { class: m.mine ? "msg mine" : "msg", "data-id": m.id, "data-seq": m.seq ?? "" },
      c.group && !m.mine ? h("span", { class: "from" }, m.from) : null,
      h("span", { class: "text" }, m.text),
      m.attachment ? this.attachmentView(m.attachment) : null,
      mark ? h("span", { class: "mark", "data-mark": mark, title: m.failed ?? mark }, MARK_TEXT[mark]) : null,
    );
  }

  private attachmentView(att: Attachment): HTMLElement {
    const url = this.files.get(att.id);
    const label = `file: ${att.name ?? "file"} (${att.size} bytes)`;
    if (url && att.type.startsWith("image/")) return h("span", { class: "attachment" }, h("img", { src: url, alt: att.name ?? "image", "data-att": att.id }));
    // The sender chose the name: saved under a safe one (no path, no control characters), as the CLI saves it.
    if (url) return h("a", { class: "attachment", href: url, download: safeFileName(att), "data-att": att.id }, label);
    return h("button", { class: "attachment", type: "button", "data-att": att.id, onclick: () => this.fetchAttachment(att) }, `${label}: download`);
  }

  private async fetchAttachment(att: Attachment): Promise<void> {
    status(`downloading ${att.name ?? "the file"}…`);
    try {
      const blob = await this.secure.fetchFile(att);
      this.files.set(att.id, URL.createObjectURL(blob));
      status(`downloaded ${att.name ?? "the file"} (${blob.size} bytes, digest and MAC checked)`);
      this.render();
    } catch (e) {
      status(`download failed: ${errorText(e)}`, true);
    }
  }

  private composer(c: Chat): HTMLFormElement {
    const off = this.stopped;
    const text = h("input", { id: "text", type: "text", placeholder: "message", autocomplete: "off", disabled: off, oninput: () => this.typed(c) });
    const file = h("input", { id: "file", type: "file", disabled: off, onchange: () => {
      const f = file.files?.[0];
      if (f) void this.sendFile(c, f);
      file.value = "";
    } });
    return h("form", { class: "composer", id: "composer", onsubmit: (ev: Event) => {
      ev.preventDefault();
      const t = text.value;
      if (!t.trim()) return;
      text.value = "";
      void this.sendText(c, t);
    } }, text, file, h("button", { id: "send", disabled: off }, "Send"));
  }

  private typed(c: Chat): void {
    // Typing is 1:1 (PROTOCOL.md §6.6); to a blocked account the server would drop it.
    if (c.group || this.stopped || !this.client.isReady || this.people.blocked.has(c.id)) return;
    if (this.pauseTimer !== null) clearTimeout(this.pauseTimer);
    this.pauseTimer = setTimeout(() => this.paused(c), PAUSED_AFTER_MS);
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) return;
    this.lastTyping = now;
    this.client.typing(c.id, "typing");
  }

  /** Typing stopped (sent, or no keystroke for a while): tell the peer once. */
  private paused(c: Chat): void {
    if (this.pauseTimer !== null) clearTimeout(this.pauseTimer);
    this.pauseTimer = null;
    if (c.group || !this.lastTyping) return;
    this.lastTyping = 0;
    if (this.client.isReady) this.client.typing(c.id, "paused");
  }

  private async sendText(c: Chat, text: string): Promise<void> {
    if (this.stopped) return;
    this.paused(c);
    const m = this.chats.add(c.id, { id: `local-${Date.now()}-${Math.random()}`, from: this.client.account, mine: true, text, ts: Date.now(), seq: null });
    this.changed();
    await this.settle(c, m, c.group ? this.secure.sendGroup(c.id, text) : this.secure.send(c.id, text));
  }

  private async sendFile(c: Chat, f: File): Promise<void> {
    if (this.stopped) return;
    const m = this.chats.add(c.id, { id: `local-${Date.now()}-${Math.random()}`, from: this.client.account, mine: true, text: "", ts: Date.now(), seq: null });
    status(`encrypting and uploading ${f.name}…`);
    this.changed();
    await this.settle(c, m, this.secure.sendFile(c.id, f).then((r) => {
      m.attachment = r.attachment;
      status(`sent ${f.name}`);
      return r.sent;
    }));
  }

  /** A send resolved (its id and seq, and for a group the tally receipts may have come before) or failed. */
  private async settle(c: Chat, m: ChatMessage, p: Promise<Sent>): Promise<void> {
    try {
      const s = await p;
      m.id = s.id;
      m.seq = s.seq;
      m.ts = s.ts;
      if (c.group) this.refreshTally(c, s.seq);
    } catch (e) {
      m.failed = errorText(e);
      if (!this.peer.refused(c.id, e)) status(`not sent: ${m.failed}`, true);
    }
    this.changed();
  }

  private async showSafety(peer: string): Promise<void> {
    try {
      this.safety.set(peer, await this.secure.safetyNumber(peer));
      this.render();
    } catch (e) {
      status(`no safety number: ${errorText(e)}`, true);
    }
  }
}

