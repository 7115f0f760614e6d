/**
 * The push part of the SDK (docs/PROTOCOL.md §5.5): register this device's
 * push endpoint, replace it, remove it, and ask what the server offers.
 * A function over any client, so client.ts stays small:
 *
 * @example
 * const p = pushCalls(client);
 * const { providers, vapid } = await p.info();          // e.g. ["apns", "webpush"]
 * await p.register({ p: "apns", token: deviceTokenHex }); // again with a new token replaces it
 * await p.register({ p: "apns", token: pushKitTokenHex, voip: true }); // iOS: the PushKit token, for calls only
 * await p.unregister();
 */
import type { PushEndpoint } from "../protocol/stanzas.ts";

export type { PushEndpoint };

export interface PushInfo {
  /** This device's endpoint as the server holds it (what messages wake), or null. */
  e: PushEndpoint | null;
  /** Its APNs VoIP (PushKit) token, if it registered one: used to ring it for calls, never for messages. */
  voip?: PushEndpoint;
  /** Providers the server has credentials for: register only with one of these. */
  providers: ("apns" | "fcm" | "webpush" | "webhook")[];
  /** The VAPID public key (base64url) to subscribe with (PushManager.subscribe's applicationServerKey), when Web Push is on. */
  vapid?: string;
}

export interface PushCalls {
  /**
   * Registers (or replaces) this device's endpoint; `at` is the server's registration stamp (ms). An APNs token with
   * `voip: true` goes to the device's second slot, for calls only (`voip: true` in the answer). Rejects with
   * bad_field or push_unavailable.
   */
  register(e: PushEndpoint): Promise<{ p: PushEndpoint["p"]; at: number; voip?: true }>;
  /** Removes this device's endpoints: no more pushes (`{voip: true}`: only its VoIP token). `removed` is false when there was none. */
  unregister(opts?: { voip?: boolean }): Promise<{ removed: boolean }>;
  info(): Promise<PushInfo>;
}

export function pushCalls(client: { request<T = any>(op: string, args?: Record<string, unknown>): Promise<T> }): PushCalls {
  return {
    register: (e) => client.request("push.set", { ...e }),
    unregister: (opts) => client.request("push.clear", opts?.voip ? { voip: true } : undefined),
    info: () => client.request("push.get"),
  };
}
