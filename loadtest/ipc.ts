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
  | { cmd: "init"; target: { host: string; port: number; ca?: string }; ids: Identity[] }
  | { cmd: "login"; concurrency: number; pingInterval: number }
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
  | { cmd: "drain_stats" };

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
  | { ev: "fatal"; message: string };
