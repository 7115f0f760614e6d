/** Messages between the coordinator (main.ts) and its workers (worker.ts), over Bun IPC. */
import type { Identity } from "./setup.ts";

export interface RunOpts {
  mode: "closed" | "open";
  /** Closed loop: messages in flight (sent, dlv receipt not yet back) per sender. */
  window: number;
  /** Open loop: this worker's share of the total rate, messages per second. */
  ratePerS: number;
  /** Messages per sender; 0 = until stopped. */
  quotaPerSender: number;
  /** Payload bytes per message. */
  size: number;
  /** Only A_i sends (to B_i). */
  oneway: boolean;
  /** Measure from the first message (no warm-up): the quota runs. */
  measureFromStart: boolean;
}

export type Cmd =
  | { cmd: "init"; target: { host: string; port: number; ca?: string; ws?: boolean }; ids: Identity[] }
  /** `confirm` false: the devices do not offer to confirm `sent` (hello without `sc`); default true. */
  | { cmd: "login"; concurrency: number; pingInterval: number; confirm?: boolean }
  | { cmd: "quit_all" }
  | { cmd: "run"; opts: RunOpts }
  | { cmd: "mark" }
  | { cmd: "stop" }
  | { cmd: "status" }
  | { cmd: "totals" }
  | { cmd: "report" }
  | { cmd: "exit" }
  /** offline: the worker's devices are senders; sender i sends to recipients[i % R] (offline), closed loop on `sent`. */
  | { cmd: "offline_run"; opts: RunOpts; recipients: { account: string; device: number }[] }
  /** offline: log the recipient devices in; they ack every delivery as it arrives. Answered with `draining`. */
  | { cmd: "drain"; ids: Identity[]; concurrency: number }
  | { cmd: "drain_stats" }
  // ---- storm-worker.ts (login-storm, reconnect-storm, groups) ----
  /** Devices of this worker: `rcpt` (receive, ack), `send` (reconnect-storm senders). */
  | { cmd: "s_init"; target: { host: string; port: number; ca?: string }; devices: { id: Identity; role: "rcpt" | "send" }[]; rs?: RsOpts; resume?: { tickets: boolean; tlsSessions: boolean } }
  /**
   * Logs every device in (those of `role`, or all). `at`: epoch ms to start at; `concurrency` 0 = all at
   * once (a storm); failed attempts are retried with `backoff` until `giveUpMs` after `at`.
   */
  | { cmd: "s_login"; at: number; concurrency: number; backoff: Backoff; timeoutMs: number; giveUpMs: number; role?: "rcpt" | "send" }
  /** reconnect-storm: the senders send batch `b` (0: acked before the cut, 1: held unacked at the cut, 2: queued while offline). */
  | { cmd: "s_batch"; b: 0 | 1 | 2 }
  /** reconnect-storm: the cut happens at `cutAt` (epoch ms); recipients stay away until `outageEnd`; `terminate`: this worker cuts its own sockets at cutAt. */
  | { cmd: "s_arm"; cutAt: number; outageEnd: number; terminate: boolean; backoff: Backoff; timeoutMs: number; giveUpMs: number }
  | { cmd: "s_status" }
  | { cmd: "s_report" }
  /** Up to 10 devices not back, with what each did last (a stalled storm says where its missing devices are). */
  | { cmd: "s_not_back" }
  // ---- groups-worker.ts (it also answers login, run, mark, stop, status, totals, report, exit) ----
  /** Groups of this worker, each its members' identities (member 0 creates it; the first `senders` send). */
  | { cmd: "g_init"; target: { host: string; port: number; ca?: string }; groups: Identity[][]; senders: number; size: number; spread?: GroupSpread }
  | { cmd: "g_create" }
  /** --spread: what this worker counted per sender (answered with `g_copies`); main sums it over workers. */
  | { cmd: "g_copies" };

/**
 * --spread: a group's members are split over workers. Per group in `groups` (same order): its index over
 * the whole run, each local member's index in the group, and every member's account (index = member
 * index; the creator, member 0, adds them all). `prefix`: the id prefix every worker writes and reads,
 * so that a member can tell which sender and message a copy from another worker's sender is.
 */
export interface GroupSpread {
  prefix: string;
  layout: { gi: number; idx: number[]; accounts: string[] }[];
}

/** Per sender of a group with members here: its copies to this worker's members; `sent`/`unacked` from its own worker. */
export interface SenderCopies {
  s: number;
  /** Base64 of a Uint16Array: copies[n] = distinct local members that got message n. */
  copies: string;
  /** Only from the worker the sender lives in: messages sent, those without `sent` yet, and its account. */
  sent?: number;
  unacked?: number[];
  account?: string;
}

/** Reconnect policy: `sdk` = the SDK's jittered exponential backoff (src/client/client.ts); `none` = at once. */
export type Backoff = "sdk" | "none";

export interface RsOpts {
  /** Messages per recipient in each batch: [acked before the cut, unacked at the cut, queued while offline]. */
  batches: [number, number, number];
  /** Messages in flight per sender until `sent`. */
  window: number;
  size: number;
}

/** What a storm worker knows at a moment (counts over its devices). */
export interface StormStatus {
  rcpt: number;
  send: number;
  rcpt_ready: number;
  send_ready: number;
  /** Per batch: written, `sent` received, delivered at least once, dlv receipt back at the sender. */
  batch: { written: number; sent: number; delivered: number; receipts: number; total: number }[];
  /** Batch 1 and 2 messages delivered on a connection made after the cut, and how many must be. */
  post_cut: number;
  post_cut_total: number;
  /** Epoch ms: last recipient back after the cut; last queued message delivered after the cut (0: not yet). */
  all_back_at: number;
  all_queued_at: number;
  /** Batch 2 messages acknowledged with `sent` before the outage ended. */
  queued_while_offline: number;
  redelivered: number;
  duplicates: number;
  out_of_order: number;
  unknown: number;
  errors: number;
  disconnects: number;
  failed_attempts: number;
  failed: number;
  /** Lean clients' reconnects (lean-resume.ts): logged in with a ticket, tickets refused, TLS handshakes resumed. */
  resumed: number;
  ticket_refused: number;
  tls_resumed: number;
}

export interface Totals {
  sent: number;
  /** `sent` answers received. */
  acked: number;
  delivered: number;
  duplicates: number;
  out_of_order: number;
  receipts: number;
  receipt_duplicates: number;
  errors: number;
  disconnects: number;
  pongs: number;
  unknown: number;
}

export interface WindowStats {
  ms: number;
  sent: number;
  delivered: number;
  acked: number;
  receipts: number;
  hist: string;
  sent_hist: string;
  rcpt_hist: string;
  lag_hist: string;
}

export type Ev =
  | { ev: "hello"; pid: number }
  | { ev: "ready"; pid: number }
  | { ev: "progress"; online: number; failed: number }
  | { ev: "online"; online: number; failed: number; ms: number; hist: string; reasons: Record<string, number> }
  | { ev: "quit" }
  | { ev: "marked" }
  | ({ ev: "stopped" } & WindowStats)
  | { ev: "status"; unacked: number; undelivered: number; no_receipt: number; unsent_bytes: number; totals: Totals }
  | { ev: "report"; totals: Totals; lost: number; lost_ids: string[]; errors_sample: string[] }
  | { ev: "totals"; totals: Totals }
  | { ev: "done" }
  | { ev: "draining"; online: number; failed: number; login_ms: number }
  /** Milliseconds from the drain command (recipient login) to the last delivery, and deliveries since. */
  | { ev: "drain_stats"; ms: number; delivered: number }
  | { ev: "fatal"; message: string }
  | { ev: "g_created"; groups: number; failed: number; ms: number; errors: string[] }
  | { ev: "g_copies"; senders: SenderCopies[] }
  | { ev: "s_online"; online: number; failed: number; ms: number; first_ms: number; last_at: number; hist: string; reasons: Record<string, number>; failed_attempts: number; timeline: number[] }
  | ({ ev: "s_status" } & StormStatus)
  | { ev: "s_not_back"; not_back: string[] }
  | ({
      ev: "s_report";
      lost: number;
      lost_ids: string[];
      /** Held unacknowledged at the cut and never delivered again. */
      not_redelivered: number;
      /** Recipients: ms from the outage's end to ready again. */
      back_hist: string;
      /** Batch 1 and 2 messages: ms from the outage's end to their delivery after the cut. */
      queued_hist: string;
      reasons: Record<string, number>;
      errors_sample: string[];
      /** Up to 10 devices not back (not ready, or a recipient not ready since the cut), with what each did last. */
      not_back: string[];
    } & StormStatus);
