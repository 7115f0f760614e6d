/**
 * The chat header's word on the peer: "online", "last seen …" or "typing…"
 * (docs/PROTOCOL.md §6.6, §6.10). Shown in the prompt, and as a line when it
 * changes, so a plain-lines chat (--lines) sees it too. What the peer's
 * privacy hides is simply not shown: no status at all.
 */
import type { PresenceView } from "../../client/presence.ts";

/** "last seen today at 14:02", "last seen yesterday at 09:15", "last seen 2026-11-30 18:40" (local time). */
export function lastSeenText(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  const day = (t: Date) => `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, "0")}-${String(t.getDate()).padStart(2, "0")}`;
  const today = new Date(now);
  const yesterday = new Date(now - 86_400_000);
  if (day(d) === day(today)) return `last seen today at ${hm}`;
  if (day(d) === day(yesterday)) return `last seen yesterday at ${hm}`;
  return `last seen ${day(d)} ${hm}`;
}

/** The status word, or "" when nothing may be shown. Typing wins over the rest. */
export function statusText(view: PresenceView | undefined, typing: boolean, now = Date.now()): string {
  if (typing) return "typing…";
  if (view?.online === true) return "online";
  if (view?.lastSeen !== undefined) return lastSeenText(view.lastSeen, now);
  return "";
}

/** Keeps the peer's status and tells the screen when its text changes. */
export class PeerStatus {
  private view: PresenceView | undefined;
  private typing = false;
  private shown = "";

  constructor(private readonly peer: string, private readonly onChange: (text: string, line: string | null) => void) {}

  get text(): string {
    return this.shown;
  }

  setView(v: PresenceView): void {
    if (v.ended) this.view = undefined; // the watch ended (privacy): nothing may be shown
    else this.view = v;
    this.update();
  }

  setTyping(on: boolean): void {
    this.typing = on;
    this.update();
  }

  private update(): void {
    const t = statusText(this.view, this.typing);
    if (t === this.shown) return;
    this.shown = t;
    // Typing is shown in the prompt only (it comes and goes every few seconds); the rest also as a line.
    this.onChange(t, this.typing || t === "" ? null : t === "online" ? `  ${this.peer} is online` : `  ${this.peer}: ${t}`);
  }
}
