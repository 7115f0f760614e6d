/**
 * The push part of the SDK (docs/PROTOCOL.md §5.5): register this device's
 * push endpoint, replace it, remove it, and ask what the server offers.
 * A function over any client, so client.ts stays small:
 *
 * @example
 * const p = pushCalls(client);
 * const { providers, vapid } = await p.info();          // e.g. ["apns", "webpush"]
 * await p.register({ p: "apns", token: deviceTokenHex }); // again with a new token replaces it
 * await p.unregister();
 */
import type { PushEndpoint } from "../protocol/stanzas.ts";

export type { PushEndpoint };

export interface PushInfo {
  /** This device's endpoint as the server holds it, or null. */
  e: PushEndpoint | null;
  /** Providers the server has credentials for: register only with one of these. */
  providers: ("apns" | "fcm" | "webpush" | "webhook")[];
  /** The VAPID public key (base64url) to subscribe with (PushManager.subscribe's applicationServerKey), when Web Push is on. */
  vapid?: string;
}

export interface PushCalls {
  /** Registers (or replaces) this device's endpoint; `at` is the server's registration stamp (ms). Rejects with bad_field or push_unavailable. */
  register(e: PushEndpoint): Promise<{ p: PushEndpoint["p"]; at: number }>;
  /** Removes this device's endpoint: no more pushes. `removed` is false when there was none. */
  unregister(): Promise<{ removed: boolean }>;
  info(): Promise<PushInfo>;
}

export function pushCalls(client: { request<T = any>(op: string, args?: Record<string, unknown>): Promise<T> }): PushCalls {
  return {
    register: (e) => client.request("push.set", { ...e }),
    unregister: () => client.request("push.clear"),
    info: () => client.request("push.get"),
  };
}
