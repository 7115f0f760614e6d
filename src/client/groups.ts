/**
 * The groups part of the SDK's API: the `group.*` requests (docs/PROTOCOL.md
 * §5.3) and the membership events. Sending to a group is `sendGroup()` in
 * client.ts, with the other sends.
 */
import type { Evt } from "../protocol/stanzas.ts";
import { TypedEmitter } from "./emitter.ts";
import type { Events, GroupEvent, GroupInfo } from "./types.ts";

/** A group membership change from an `evt`, or null when the event is not one. */
export function groupEvent(s: Evt): GroupEvent | null {
  if (s.k !== "grp" || s.g === undefined || s.seq === undefined) return null;
  const ev: GroupEvent = { op: s.op as GroupEvent["op"], group: s.g, seq: s.seq, by: s.by ?? "", members: s.m ?? [], ts: s.ts };
  if (s.name !== undefined) ev.name = s.name;
  return ev;
}

/** The group calls of SwitchboardClient, each one request. */
export abstract class GroupCalls extends TypedEmitter<Events> {
  abstract request<T = any>(op: string, args?: Record<string, unknown>): Promise<T>;

  /** Creates a group with us as its admin; resolves with its id. */
  async createGroup(name: string, members: string[] = []): Promise<{ g: string; seq: number }> {
    return this.request("group.create", members.length ? { name, m: members } : { name });
  }
  addMembers(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.add", { g: group, m: members });
  }
  removeMembers(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.remove", { g: group, m: members });
  }
  promote(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.promote", { g: group, m: members });
  }
  demote(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.demote", { g: group, m: members });
  }
  leaveGroup(group: string): Promise<{ seq: number }> {
    return this.request("group.leave", { g: group });
  }
  renameGroup(group: string, name: string): Promise<{ seq: number }> {
    return this.request("group.rename", { g: group, name });
  }
  groupInfo(group: string): Promise<GroupInfo> {
    return this.request("group.info", { g: group });
  }
  groups(): Promise<{ groups: { g: string; name: string; n: number }[] }> {
    return this.request("group.list");
  }
  /** Of our message `seq` in `group`: how many members (n) have it on a device, and how many read it. */
  messageState(group: string, seq: number): Promise<{ g: string; seq: number; id: string; n: number; delivered: number; read: number }> {
    return this.request("group.state", { g: group, seq });
  }
}
