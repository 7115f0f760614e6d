/**
 * The calls part of the SDK (docs/PROTOCOL.md §6.13, docs/CALLS.md): ring an
 * account, answer, reject, pass ICE candidates, hang up, and get TURN
 * credentials. Signals are ephemeral: sent only while connected, never
 * queued. Payloads are opaque to the server; the application puts its SDP
 * and candidates in them, encrypted per device (SecureClient's sessions).
 *
 * @example
 * const calls = callControl(client);
 * client.on("call", (s) => { if (s.kind === "offer") calls.answer(s, answerFor(s.payload)); });
 * const id = await calls.call("bob", (device) => offerFor(device));
 * const turn = await calls.turn(); // { username, password, expires, urls } for the relay
 */
import { randomBytes } from "node:crypto";
import type { CallC, CallKind, Payloads } from "../protocol/stanzas.ts";
import type { CallSignal } from "./types.ts";

export interface TurnCredentialsView {
  username: string;
  password: string;
  /** Unix seconds. */
  expires: number;
  urls: string[];
}

interface Client {
  signal(s: CallC): boolean;
  devices(account: string): Promise<number[]>;
  forgetDevices(account?: string): void;
  request<T = any>(op: string, args?: Record<string, unknown>): Promise<T>;
}

export interface CallControl {
  /** Rings every device of `account` with `payloadFor(device)`; resolves with the call id. `group`: part of that group's call. */
  call(account: string, payloadFor: (device: number) => Uint8Array | Promise<Uint8Array>, opts?: { id?: string; group?: string }): Promise<string>;
  /** Answers an offer (this device takes the call; the account's other devices stop ringing). */
  answer(offer: CallSignal, payload?: Uint8Array): boolean;
  reject(offer: CallSignal, payload?: Uint8Array): boolean;
  busy(offer: CallSignal): boolean;
  /** An ICE candidate (or any signal) to one device of the other side. */
  ice(account: string, id: string, device: number, payload: Uint8Array): boolean;
  /** Hangs up: to one device (after the answer), or to every device of `account` while it rings. */
  hangup(account: string, id: string, device?: number, payload?: Uint8Array): boolean;
  turn(): Promise<TurnCredentialsView>;
}

export function callControl(client: Client): CallControl {
  const one = (k: CallKind, to: string, c: string, device: number | undefined, payload?: Uint8Array): boolean => {
    const s: CallC = { t: "call", c, to, k };
    if (device !== undefined) {
      s.td = device;
      if (payload) s.p = [[device, payload]];
    }
    return client.signal(s);
  };
  return {
    async call(account, payloadFor, opts = {}) {
      const id = opts.id ?? randomBytes(9).toString("base64url");
      const devices = await client.devices(account);
      const p: Payloads = await Promise.all(devices.map(async (d): Promise<Payloads[number]> => [d, await payloadFor(d)]));
      const s: CallC = { t: "call", c: id, to: account, k: "offer", p };
      if (opts.group) s.g = opts.group;
      if (!client.signal(s)) throw new Error("call: not connected (call signals are never queued)");
      return id;
    },
    answer: (o, payload) => one("answer", o.from, o.id, o.fromDevice, payload ?? new Uint8Array(0)),
    reject: (o, payload) => one("reject", o.from, o.id, o.fromDevice, payload),
    busy: (o) => one("busy", o.from, o.id, o.fromDevice),
    ice: (account, id, device, payload) => one("ice", account, id, device, payload),
    hangup: (account, id, device, payload) => one("hangup", account, id, device, payload),
    async turn() {
      const r = await client.request<{ u: string; p: string; exp: number; urls: string[] }>("calls.turn");
      return { username: r.u, password: r.p, expires: r.exp, urls: r.urls };
    },
  };
}
