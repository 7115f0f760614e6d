/** The push provider layer (issue 14): providers, the async sender, the per-device limiter. See docs/PUSH.md. */
export * from "./types.ts";
export { ApnsProvider, type ApnsConfig } from "./apns.ts";
export { FcmProvider, type FcmConfig, type ServiceAccount } from "./fcm.ts";
export { WebPushProvider, generateVapidKeys, type WebPushConfig, type VapidKeys } from "./webpush.ts";
export { WebhookProvider, verifyWebhook, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, type WebhookConfig, type WebhookBody } from "./webhook.ts";
export { PushSender, type SenderOptions, type SenderEvent, type SubmitResult, type LaneStats } from "./sender.ts";
export { DevicePushLimiter, type DevicePushLimits, type LimitDecision } from "./ratelimit.ts";
