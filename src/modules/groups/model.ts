/**
 * The groups module's model, shared by its two halves: a group and its
 * members as loaded from groups.db, and the failure both answer with.
 * index.ts holds the module (its state, start and stop) and membership (the
 * group.* iqs that change or list members, and their events); messages.ts
 * holds group messages (fan-out of `gmsg`, `dlv`/`exp`/`read` receipts, the
 * aggregate state). Split (files under src/ stay ≤ 500 lines) along that line
 * because a message reads the member list and marks but never changes who is
 * in a group.
 */
import type { Conn } from "../../transport/connection.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import type { GroupStore, Role } from "./store.ts";

export interface Member {
  role: Role;
  joined: number;
  dlv: number;
  read: number;
}

export interface Group {
  id: string;
  name: string;
  created: number;
  creator: string;
  members: Map<string, Member>;
}

export interface State {
  store: GroupStore;
  groups: Map<string, Group>;
  expireTimer: ReturnType<typeof setInterval> | null;
}

export type Fail = { ok: false; e: ErrorCode; m: string };
export const no = (e: ErrorCode, m: string): Fail => ({ ok: false, e, m });
export const isFail = (x: unknown): x is Fail => typeof x === "object" && x !== null && (x as Fail).ok === false;

/**
 * One answer for "no such group" and "not a member" (§6.8): with two, anyone could tell
 * which group ids exist. A member always finds its group, so it loses nothing.
 */
export function notMember(conn: Conn, id: string): string {
  return `${conn.account} is not a member of ${id} (or there is no such group)`;
}

/** The lookups of one running instance (index.ts), bound to its state and store. */
export interface Lookup {
  /** The group, from memory or else from the store (then kept); null when there is none. */
  load(id: string): Group | null;
  /** The group, if the caller is a member (and with `admin`, an admin); otherwise the failure to answer with. */
  memberOf(conn: Conn, id: unknown, admin?: boolean): Group | Fail;
}
