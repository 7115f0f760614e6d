/**
 * What a decrypted payload carries, for SecureClient (secure.ts): the inner
 * content `{k: ...}` of a 1:1 or group message, as the event to emit. A sender
 * key (`skd`) is installed here (through `install`), before the state is
 * saved; the event is emitted after.
 */
import type { Message } from "./client.ts";
import { unpack } from "./crypto/index.ts";
import { parseAttachment } from "./media-format.ts";
import type { SecureEvents } from "./secure-types.ts";

const td = new TextDecoder();

type Emission = { [K in keyof SecureEvents]: [K, ...SecureEvents[K]] }[keyof SecureEvents];

/** The event `plaintext` makes, or null (a sender key installed: nothing to tell). */
export function interpret(m: Message, plaintext: Uint8Array, group: boolean, install: (dm: Uint8Array) => boolean): Emission | null {
  const inner = unpack(plaintext) as { k?: string; b?: unknown; d?: unknown; att?: unknown } | undefined;
  const head = { conversation: m.conversation, from: m.from, fromDevice: m.fromDevice, id: m.id, seq: m.seq };
  const undecryptable = (reason: string): Emission => ["undecryptable", { ...head, reason }];
  if (inner?.k === "att") {
    const attachment = parseAttachment(inner.att);
    if (!attachment) return undecryptable("bad_attachment");
    return ["attachment", { ...head, to: m.to, ts: m.ts, sync: m.sync, group, attachment }];
  }
  if (inner?.k === "m" && inner.b instanceof Uint8Array) {
    return ["message", { ...head, to: m.to, ts: m.ts, sync: m.sync, group, body: inner.b, text: td.decode(inner.b) }];
  }
  if (inner?.k === "skd" && inner.d instanceof Uint8Array && !group) return install(inner.d) ? null : undecryptable("bad_distribution");
  return undecryptable("unknown_content");
}

/**
 * The application's holds on the ack of the incoming delivery whose event is being emitted
 * (SecureClient.holdAck): taken synchronously by its handlers, awaited before the state is stored and the
 * delivery acknowledged.
 */
export class AckHolds {
  private open: Promise<void>[] | null = null;

  /** Runs `emit`, collecting the holds its handlers take; resolves once every one is released. */
  async during(emit: () => unknown): Promise<void> {
    const held: Promise<void>[] = (this.open = []);
    try {
      emit();
    } finally {
      this.open = null;
    }
    await Promise.all(held);
  }

  take(): () => void {
    if (!this.open) throw new Error("SecureClient.holdAck: call it from a handler of an incoming message's event (message, attachment…), while the event is emitted");
    let release!: () => void;
    this.open.push(new Promise<void>((r) => (release = r)));
    return release;
  }
}
