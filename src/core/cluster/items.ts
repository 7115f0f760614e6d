/** The items of the node links, by kind `k` (their meaning: forward.ts, which sends and receives them). */
import type { ClientStanza } from "../../protocol/stanzas.ts";
import type { AcceptedRecord, QueueItem } from "../../store/queue.ts";
import type { ForwardedCopy, Stanza } from "../accept.ts";
import type { EnqueueMeta } from "../delivery.ts";
import type { ActiveDevice } from "../directory.ts";
import type { ListItem } from "./lists.ts";
import type { BoundItem } from "./bounds.ts";
import type { ShardData } from "./rows.ts";

export type Item =
  | { k: "m"; r: AcceptedRecord; c: ForwardedCopy[] }
  | { k: "d"; a: string; m: EnqueueMeta; s: Stanza; x: number }
  | { k: "q"; a: string }
  | { k: "r"; a: string; d: ActiveDevice[] | null; f?: number[] }
  | { k: "c"; a: string }
  | { k: "o"; a: string; d: number; c: number; s: ClientStanza }
  | { k: "x"; a: string; d: number; c: number; b: Uint8Array }
  | { k: "z"; c: number }
  | { k: "h"; n: GroupHook; i: QueueItem }
  | { k: "p"; b: unknown }
  | { k: "n"; c: string; i: string }
  | { k: "N"; i: string; s: number }
  | { k: "S"; d: ShardData }
  | ListItem
  | BoundItem;

export type GroupHook = "delivery:acked" | "delivery:expired";
