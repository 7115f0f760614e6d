/**
 * Who may see what of whom, and who may reach whom: the privacy and blocking
 * rules, as pure functions over each account's rules (cached from the
 * module's store: the most recently used accounts, RulesCache).
 *
 * Visibility is mutual (WhatsApp's reciprocity, generalised): V sees T's
 * field only if T shares it with V *and* V shares its own with T. So who
 * hides theirs from everyone sees no one's, and who shares only with
 * contacts sees only the fields of accounts in its contacts. A block in
 * either direction hides everything both ways. docs/PROTOCOL.md §6.10.
 */
import { Policy, type PolicyName, POLICY_NAMES, type PresenceStore } from "./store.ts";

/**
 * An account's rules as the rest of the module sees them: read-only. Every write goes through RulesCache, which
 * writes the store, applies it and bumps the facts epoch in one place (RulesCache.changed).
 */
export interface Rules {
  readonly contacts: ReadonlySet<string>;
  readonly blocks: ReadonlySet<string>;
  /** Accounts this one has sent a 1:1 message to (since this store exists). */
  readonly talked: ReadonlySet<string>;
  /**
   * Cluster mode: accounts of other nodes that block this one, sent by their homes and kept at this one's home, so a
   * check about this account (its messages, receipts, invitations) sees a remote block with local data.
   */
  readonly blockedBy: ReadonlySet<string>;
  readonly lastSeen: Policy;
  readonly online: Policy;
  /** Whether the policy is the account's own choice (else the server default, which a restart may change). */
  readonly explicit: boolean;
  /** Last seen as stored (minute-granular ms), null if never: live.ts's own, read by no rule (no epoch bump). */
  storedLastSeen: number | null;
}

/** The same, writable: RulesCache's own entries. */
interface Entry {
  contacts: Set<string>;
  blocks: Set<string>;
  talked: Set<string>;
  blockedBy: Set<string>;
  lastSeen: Policy;
  online: Policy;
  explicit: boolean;
  storedLastSeen: number | null;
}

export interface Visibility {
  online: boolean;
  lastSeen: boolean;
}
export const NOTHING: Visibility = { online: false, lastSeen: false };
const EVERYTHING: Visibility = { online: true, lastSeen: true };

export const policyName = (p: Policy): PolicyName => POLICY_NAMES[p];
export const policyOf = (name: unknown): Policy | null => {
  const i = POLICY_NAMES.indexOf(name as PolicyName);
  return i < 0 ? null : (i as Policy);
};

/** Does `owner` share a field under policy `p` with `viewer`? */
function shares(owner: Rules, viewer: string, p: Policy): boolean {
  return p === Policy.EVERYONE || (p === Policy.CONTACTS && owner.contacts.has(viewer));
}

/** `a` blocks `b`, from either one's rules (a's own blocks, or b's record of remote accounts that block it). */
export function blocks(a: string, ra: Rules, b: string, rb: Rules): boolean {
  return ra.blocks.has(b) || rb.blockedBy.has(a);
}

export function blockedEitherWay(a: string, ra: Rules, b: string, rb: Rules): boolean {
  return blocks(a, ra, b, rb) || blocks(b, rb, a, ra);
}

/**
 * The viewer's half of the rule about one target, computed where the viewer's rules are (its home node): whether
 * it shares its own online state (`o`) and last seen (`l`) with the target (reciprocity), and whether it blocks
 * it (`b`). In a cluster a watcher's node sends this to the target's home, which has the other half.
 */
export interface Half {
  o: boolean;
  l: boolean;
  b: boolean;
}

export function half(viewer: string, rv: Rules, target: string): Half {
  return { o: shares(rv, target, rv.online), l: shares(rv, target, rv.lastSeen), b: rv.blocks.has(target) || rv.blockedBy.has(target) };
}

/** What `viewer` may see of `target`, from the viewer's half and the target's rules (the target's home decides). */
export function visibilityOf(h: Half, viewer: string, target: string, rt: Rules): Visibility {
  if (viewer === target) return EVERYTHING;
  if (h.b || rt.blocks.has(viewer) || rt.blockedBy.has(viewer)) return NOTHING;
  return { online: h.o && shares(rt, viewer, rt.online), lastSeen: h.l && shares(rt, viewer, rt.lastSeen) };
}

/** What `viewer` may see of `target`. */
export function visibility(viewer: string, rv: Rules, target: string, rt: Rules): Visibility {
  return visibilityOf(half(viewer, rv, target), viewer, target, rt);
}

/** `owner` knows `other`: has it as a contact, or has written to it. The opposite of a stranger. */
export function knows(owner: Rules, other: string): boolean {
  return owner.contacts.has(other) || owner.talked.has(other);
}

/**
 * The rules of the accounts used most recently, loaded from the store on a miss. Bounded (presence.rules_cache):
 * two generations of at most max/2 entries each (like core/acceptances.ts): a hit in the old one moves the entry to
 * the young one; when the young one is full the old one is dropped whole. So at most `max` entries, no per-hit
 * reordering, and what is evicted is what went unused for a whole generation.
 *
 * Correct after eviction because every change is written to the store before it is applied to the cached entry
 * (contacts, blocks, privacy, talked, last seen), so a reload reads the same rules. The one exception is a row a
 * full disk refused (index.ts unwrittenTalk): until its retry writes it, a reload may not know that pair talked.
 * An entry is never held across a turn by a caller (each handler gets it, uses it, and lets go).
 *
 * The only writer of the rules: a change to contacts, blocks, remote blocks or policies, an account dropped or
 * reloaded, bumps the facts epoch here (changed()), since connections keep the `contact:check` answers that read
 * them (src/core/facts.ts). `talked` only ever grows and needs none (index.ts onCheck says why).
 */
export class RulesCache {
  private young = new Map<string, Entry>();
  private old = new Map<string, Entry>();
  /**
   * What a change calls (ctx.facts.changed). Set by each start of the module, not by the constructor: the cache is
   * shared state that outlives a hot reload (ctx.shared), and the bump must be the running module's.
   */
  onChange: () => void = () => {};

  constructor(private store: PresenceStore, private defaults: { lastSeen: Policy; online: Policy }, private readonly max = 100_000) {}

  get(account: string): Rules {
    return this.entry(account);
  }

  private entry(account: string): Entry {
    let r = this.young.get(account);
    if (r !== undefined) return r;
    r = this.old.get(account);
    if (r !== undefined) this.old.delete(account);
    else {
      const rec = this.store.load(account);
      r = {
        contacts: new Set(rec.contacts),
        blocks: new Set(rec.blocks),
        talked: new Set(rec.talked),
        blockedBy: new Set(rec.blockedBy),
        lastSeen: rec.lastSeenPolicy ?? this.defaults.lastSeen,
        online: rec.onlinePolicy ?? this.defaults.online,
        explicit: rec.lastSeenPolicy !== null,
        storedLastSeen: rec.lastSeen,
      };
    }
    if (this.young.size >= Math.max(1, this.max >> 1)) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(account, r);
    return r;
  }

  /** Records that `from` wrote to `to`: one row the first time, nothing after. No bump: see the class comment. */
  talked(from: string, to: string): void {
    const r = this.entry(from);
    if (r.talked.has(to)) return;
    r.talked.add(to);
    this.store.talked(from, to);
  }

  /** Adds `list` (names not yet among them) to the account's contacts; the count after. */
  addContacts(account: string, list: readonly string[]): number {
    const r = this.entry(account);
    const fresh = list.filter((x) => !r.contacts.has(x));
    this.store.addContacts(account, fresh);
    for (const x of fresh) r.contacts.add(x);
    this.changed(); // a stranger's receipt may now be a contact's
    return r.contacts.size;
  }

  /** Removes `list` from the account's contacts; the count after. */
  removeContacts(account: string, list: readonly string[]): number {
    const r = this.entry(account);
    this.store.removeContacts(account, list);
    for (const x of list) r.contacts.delete(x);
    this.changed(); // a receipt allowed because the pair knew each other may be limited now
    return r.contacts.size;
  }

  /** The account's privacy policies, its own choice from now on. */
  setPrivacy(account: string, lastSeen: Policy, online: Policy): void {
    const r = this.entry(account);
    this.store.setPrivacy(account, lastSeen, online);
    r.lastSeen = lastSeen;
    r.online = online;
    r.explicit = true;
    this.changed(); // no cached answer reads the policies today; bumped so that one may
  }

  /** `account` blocks (`on`) or unblocks `other`; false when that was so already (nothing written). */
  block(account: string, other: string, on: boolean): boolean {
    const r = this.entry(account);
    if (r.blocks.has(other) === on) return false;
    if (on) this.store.block(account, other);
    else this.store.unblock(account, other);
    if (on) r.blocks.add(other);
    else r.blocks.delete(other);
    this.changed();
    return true;
  }

  /** Cluster: `by`, an account of `node`, blocks (`on`) or no longer blocks `account`, one of this node's. */
  setBlockedBy(account: string, by: string, node: string, on: boolean): void {
    this.store.setBlockedBy(account, by, node, on);
    const r = this.entry(account);
    if (on) r.blockedBy.add(by);
    else r.blockedBy.delete(by);
    this.changed();
  }

  /**
   * Cluster: `node`'s remote blocks replaced by `rows` (PresenceStore.replaceBlockedBy). Rare (a node's start): the
   * accounts named are dropped from the cache and reloaded on use.
   */
  replaceBlockedBy(node: string, rows: readonly [account: string, by: string][], clear: boolean): void {
    for (const a of this.store.replaceBlockedBy(node, rows, clear)) this.forget(a);
    this.changed();
  }

  /** The account was deleted: gone from the store and from every cached list that named it. */
  drop(account: string): void {
    this.store.drop(account);
    for (const gen of [this.young, this.old]) {
      gen.delete(account);
      for (const r of gen.values()) {
        r.contacts.delete(account);
        r.blocks.delete(account);
        r.talked.delete(account);
        r.blockedBy.delete(account);
      }
    }
    this.changed();
  }

  /** The cached entry of `account` dropped (its rows changed under it: a shard's rows in or out, a node's resync of remote blocks); reloaded on use. */
  forget(account: string): void {
    this.young.delete(account);
    this.old.delete(account);
    this.changed();
  }

  /** The one bump of the facts epoch for the rules' changes (see the class comment). */
  private changed(): void {
    this.onChange();
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
