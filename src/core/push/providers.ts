/**
 * The providers a configuration turns on: each one whose credentials are set
 * (the `push.*` block of src/core/config.ts). A half-set provider stops the
 * start naming what is missing, rather than running without pushes.
 */
import { readFileSync } from "node:fs";
import type { Config } from "../config.ts";
import { ApnsProvider } from "./apns.ts";
import { FcmProvider, type ServiceAccount } from "./fcm.ts";
import type { PushProvider } from "./types.ts";
import { WebhookProvider } from "./webhook.ts";
import { WebPushProvider } from "./webpush.ts";

function all(block: string, values: Record<string, string>): boolean {
  const set = Object.entries(values).filter(([, v]) => v !== "");
  if (set.length === 0) return false;
  if (set.length < Object.keys(values).length) {
    const missing = Object.keys(values).filter((k) => values[k] === "");
    throw new Error(`config: ${set.map(([k]) => `${block}.${k}`).join(", ")} set but ${missing.map((k) => `${block}.${k}`).join(", ")} not: set them all to turn the provider on, or none`);
  }
  return true;
}

function read(key: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`config: ${key}: cannot read ${path} (${(e as Error).message})`);
  }
}

export function providersFrom(c: Config["push"]): PushProvider[] {
  const out: PushProvider[] = [];
  const a = c.apns;
  if (all("push.apns", { team_id: a.teamId, key_id: a.keyId, key_file: a.keyFile, topic: a.topic })) {
    out.push(new ApnsProvider({
      teamId: a.teamId, keyId: a.keyId, privateKey: read("push.apns.key_file", a.keyFile), topic: a.topic, baseUrl: a.url,
      ...(a.caFile ? { ca: read("push.apns.ca_file", a.caFile) } : {}),
    }));
  }
  if (c.fcm.serviceAccountFile) {
    let sa: ServiceAccount;
    try {
      sa = JSON.parse(read("push.fcm.service_account_file", c.fcm.serviceAccountFile));
    } catch (e) {
      throw new Error(`config: push.fcm.service_account_file: ${(e as Error).message}`);
    }
    out.push(new FcmProvider({ serviceAccount: sa, baseUrl: c.fcm.url, ...(c.fcm.tokenUrl ? { tokenUrl: c.fcm.tokenUrl } : {}) }));
  }
  const w = c.webpush;
  if (all("push.webpush", { vapid_public: w.vapidPublic, vapid_private: w.vapidPrivate, subject: w.subject })) {
    out.push(new WebPushProvider({ vapid: { publicKey: w.vapidPublic, privateKey: w.vapidPrivate }, subject: w.subject, allowInsecure: w.allowInsecure }));
  }
  if (all("push.webhook", { url: c.webhook.url, secret: c.webhook.secret })) out.push(new WebhookProvider({ url: c.webhook.url, secret: c.webhook.secret }));
  return out;
}
