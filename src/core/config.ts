/**
 * One table of settings. Each has a dotted key (`tcp.port`), which is also
 * its place in the TOML file (`[tcp] port = 5222`), its flag (`--tcp-port`)
 * and its environment variable (`SWITCHBOARD_TCP_PORT`). Precedence:
 * flag > environment > file > default. The README's configuration reference
 * is generated from this table by `switchboard config`.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { clusterSettingErrors } from "./cluster/settings-check.ts";

type Kind = "string" | "int" | "bool" | "enum";
interface Setting {
  key: string;
  kind: Kind;
  def: string | number | boolean;
  doc: string;
  min?: number;
  max?: number;
  values?: readonly string[];
}

export const SETTINGS: readonly Setting[] = [
  { key: "data_dir", kind: "string", def: "./data", doc: "Where accounts, queues, the server id and the development TLS certificate live." },
  { key: "tcp.host", kind: "string", def: "127.0.0.1", doc: "Plain TCP listen address." },
  { key: "tcp.port", kind: "int", def: 5222, min: -1, max: 65535, doc: "Plain TCP port; 0 picks a free port, -1 disables the listener." },
  { key: "tls.host", kind: "string", def: "127.0.0.1", doc: "TLS listen address." },
  { key: "tls.port", kind: "int", def: 5223, min: -1, max: 65535, doc: "TLS port; 0 picks a free port, -1 disables the listener." },
  { key: "tls.cert", kind: "string", def: "", doc: "PEM certificate chain. Empty: a development certificate is generated under data_dir on first start." },
  { key: "tls.key", kind: "string", def: "", doc: "PEM private key for tls.cert." },
  { key: "tls.max_version", kind: "enum", def: "1.3", values: ["1.3", "1.2"], doc: "Highest TLS version of the TLS port. 1.2: a resumed handshake (session ticket) skips the key exchange, which BoringSSL's TLS 1.3 resumption never does (psk_dhe_ke only): about 45 against 113 µs of server CPU above a TCP connect's (BENCHMARKS.md, reconnect storm). The wss and https ports keep 1.3." },
  { key: "tls.groups", kind: "string", def: "", doc: "Key exchange groups of the TLS port, most preferred first (OpenSSL syntax, e.g. X25519:P-256). Empty: Bun's default, X25519MLKEM768 (post-quantum hybrid) first; X25519 alone takes about 20 µs off each TLS 1.3 handshake, full or resumed, without the post-quantum protection." },
  { key: "ws.host", kind: "string", def: "127.0.0.1", doc: "WebSocket listen address (docs/WEBSOCKET.md)." },
  { key: "ws.port", kind: "int", def: -1, min: -1, max: 65535, doc: "WebSocket port: the protocol's frames as binary WebSocket messages, for browsers (docs/WEBSOCKET.md); 0 picks a free port, -1 (the default) disables it." },
  { key: "ws.tls_port", kind: "int", def: -1, min: -1, max: 65535, doc: "WebSocket over TLS (wss://) port, with the certificate of tls.cert/tls.key (or the development one); on ws.host. 0 picks a free port, -1 (the default) disables it." },
  { key: "ws.http_path", kind: "string", def: "/ws", doc: "The path on the HTTP port (http.port) that upgrades to the WebSocket transport: one port for the web client (/app), its attachments and its session. On by default: it opens nothing the TCP port does not (the same authenticated login, on http.host, loopback by default; docs/WEBSOCKET.md). Empty: none." },
  { key: "ws.origins", kind: "string", def: "", doc: "Comma-separated Origin values (`https://chat.example.com`) allowed to open a WebSocket (others get 403) and to use `/media` cross-origin (CORS; others get no CORS header). Requests without an Origin (non-browser clients such as the SDK in Bun or Node) are always let through. Empty: any origin." },
  { key: "http.host", kind: "string", def: "127.0.0.1", doc: "HTTP address for /healthz, /metrics and attachments (/media)." },
  { key: "http.port", kind: "int", def: 5280, min: -1, max: 65535, doc: "HTTP port; 0 picks a free port, -1 disables it." },
  { key: "http.tls_port", kind: "int", def: -1, min: -1, max: 65535, doc: "HTTPS twin of http.port on http.host: the same routes (/app, /media, the ws.http_path upgrade as wss://, /healthz, /metrics; admin and /trace from loopback only) with the certificate of tls.cert/tls.key (or the development one), so a browser reaches the web client, its attachments and its session over TLS on one port without a proxy in front (docs/WEBSOCKET.md). 0 picks a free port, -1 (the default) disables it." },
  { key: "http.app", kind: "bool", def: true, doc: "Serve the web client at /app on the HTTP port (web/app/, bundled on its first request; docs/WEBSOCKET.md). It talks to the server over ws.http_path (`/ws` by default)." },
  { key: "limits.max_frame", kind: "int", def: 65536, min: 256, max: 16 * 1024 * 1024, doc: "Largest frame body accepted, in bytes (announced in the server hello)." },
  { key: "limits.max_devices", kind: "int", def: 8, min: 1, max: 64, doc: "Devices per account." },
  { key: "limits.outbound_bytes", kind: "int", def: 1024 * 1024, min: 65536, doc: "Unsent bytes a connection may hold before it is cut off as a slow consumer." },
  { key: "limits.window", kind: "int", def: 256, min: 1, max: 65536, doc: "Unacknowledged deliveries in flight per connection; more follow as acks arrive." },
  { key: "limits.error_budget", kind: "int", def: 100, min: 1, max: 16382, doc: "Invalid frames a connection may send before it is closed." }, // max: what Conn counts (ERRORS_MAX, src/transport/connection.ts)
  { key: "limits.max_connections", kind: "int", def: 0, min: 0, doc: "Open connections (TCP and TLS) beyond which a new one is closed at once with `close try_again` and a retry-after. 0: the process's open-file limit less 256 (kept for SQLite files and listeners)." },
  { key: "limits.send_rate", kind: "int", def: 0, min: 0, doc: "Messages (`msg`, `gmsg`) per second one account may send over all its devices (token bucket refill); beyond it a send is refused with rate_limited and a retry-after. 0: no limit." },
  { key: "limits.send_burst", kind: "int", def: 100, min: 1, doc: "Messages an account may send at once before limits.send_rate applies (token bucket size)." },
  { key: "timeouts.ping_interval", kind: "int", def: 30, min: 1, doc: "Seconds between client pings, announced in the hello." },
  { key: "timeouts.idle", kind: "int", def: 90, min: 2, doc: "Seconds of silence after which a connection is reaped." },
  { key: "timeouts.auth", kind: "int", def: 10, min: 1, doc: "Seconds a connection may stay unauthenticated." },
  { key: "timeouts.sweep", kind: "int", def: 1, min: 1, max: 60, doc: "Seconds between sweeps for idle and unauthenticated connections." },
  { key: "timeouts.link", kind: "int", def: 300, min: 10, doc: "Seconds a device-link request waits for approval." },
  { key: "auth.enroll_code_ttl", kind: "int", def: 86400, min: 60, doc: "Seconds an enrollment code from `user add` stays valid." },
  { key: "auth.fail_per_ip", kind: "int", def: 30, min: 1, doc: "Failed logins per source address per minute before refusing that address." },
  { key: "auth.fail_per_account", kind: "int", def: 10, min: 1, doc: "Failed logins per account from one source address per minute before refusing that address for that account (failures from other addresses never lock an account out)." },
  { key: "auth.ticket_lifetime", kind: "int", def: 604800, min: 0, doc: "Seconds a resumption ticket stays valid (a login with `resume`, an HMAC instead of Ed25519; docs/PROTOCOL.md §4.11); also how often the ticket key rotates (the previous key is still checked). 0: no tickets." },
  { key: "queue.shards", kind: "int", def: 8, min: 1, max: 256, doc: "Offline-queue SQLite files (an account's queues live in the shard its name hashes to). Keep it fixed for a data directory: changing it strands queued messages." },
  { key: "queue.commit_ms", kind: "int", def: 5, min: 0, max: 1000, doc: "Group commit interval: a queue item not acknowledged within one to two intervals is committed (one whole interval at least, to be acknowledged and never written)." },
  { key: "queue.commit_rows", kind: "int", def: 1000, min: 1, doc: "Group commit: rows that trigger a commit before commit_ms." },
  { key: "queue.committer", kind: "enum", def: "worker", values: ["worker", "inline"], doc: "Where the queue's group commits and WAL checkpoints run: worker (default): a thread with its own connection to every shard file, so the event loop never waits for the disk (sent still waits for the commit; about 7-8 MB of RSS); inline: on the event loop, for a machine with one core, where the Worker has no core of its own. docs/ARCHITECTURE.md, BENCHMARKS.md." },
  { key: "queue.sent_rides", kind: "bool", def: true, doc: "Let a `sent` ride on its own `dlv` receipt for clients that offer hello `sr` (one frame instead of two, PROTOCOL.md §6.2). false: such clients get the two frames, as older ones do. (It was off for a while: the receipts missing in some loadtest runs, BENCHMARKS.md 2026-12-03 11:13, were refused by the stranger limit after an ack overtook held stanzas, not lost by this.)" },
  { key: "queue.durability", kind: "enum", def: "process", values: ["process", "power"], doc: "process: survives kill -9 (WAL, synchronous=NORMAL). power: survives power loss (synchronous=FULL), slower." },
  { key: "queue.retention", kind: "int", def: 30 * 86400, min: 1, doc: "Seconds an undelivered item waits before it expires (default 30 days); its device gets a gap notice and its sender an `exp` receipt." },
  { key: "queue.dedup_ttl", kind: "int", def: 86400, min: 1, doc: "Seconds a confirming sender's acceptance record is kept when the sender never confirms its sent (docs/PROTOCOL.md §6.2; default a day). Records of clients that do not confirm are kept for queue.retention." },
  { key: "queue.expire_every", kind: "int", def: 60, min: 1, doc: "Seconds between retention sweeps." },
  { key: "queue.max_messages", kind: "int", def: 10000, min: 1, doc: "Items one device may have queued; a send beyond it is refused with queue_full." },
  { key: "queue.max_bytes", kind: "int", def: 64 * 1024 * 1024, min: 1024, doc: "Bytes one device may have queued; a send beyond it is refused with queue_full." },
  { key: "groups.max_members", kind: "int", def: 1024, min: 2, max: 100_000, doc: "Members one group may have." },
  { key: "groups.max_per_account", kind: "int", def: 1000, min: 1, doc: "Groups one account may belong to." },
  { key: "keys.max_otk", kind: "int", def: 1000, min: 1, max: 100_000, doc: "One-time prekeys a device may have stored; an upload beyond it is refused with too_many_keys." },
  { key: "keys.low_otk", kind: "int", def: 10, min: 0, doc: "When a key fetch leaves a device with fewer one-time prekeys than this, the device gets a `keys` low notice (once per crossing; 0: never)." },
  { key: "keys.fetch_rate", kind: "int", def: 60, min: 1, doc: "Key bundle fetches per minute an account may make (token bucket refill; a fetch beyond it is refused with rate_limited)." },
  { key: "keys.fetch_burst", kind: "int", def: 100, min: 1, doc: "Key bundle fetches an account may make at once before keys.fetch_rate applies (token bucket size)." },
  { key: "presence.default_policy", kind: "enum", def: "contacts", values: ["everyone", "contacts", "nobody"], doc: "Who sees the online state and last seen of an account that never chose (`privacy` in the CLI, iq privacy.set). Visibility is mutual: who hides theirs sees no one's (docs/PROTOCOL.md §6.10)." },
  { key: "presence.grace_ms", kind: "int", def: 15000, min: 0, max: 600_000, doc: "Milliseconds after an account's last active device leaves before watchers are told it is offline; a reconnect within it emits nothing." },
  { key: "presence.coalesce_ms", kind: "int", def: 2000, min: 0, max: 600_000, doc: "Presence frames about one account go out at most once per this many milliseconds; changes in between are merged into one." },
  { key: "presence.lease_ms", kind: "int", def: 60000, min: 100, max: 3_600_000, doc: "Milliseconds a presence subscription lasts unless its device renews it (presence.sub again)." },
  { key: "presence.max_subs", kind: "int", def: 32, min: 1, max: 1024, doc: "Accounts one device may be subscribed to at once (its open chats, not its contact list)." },
  { key: "presence.last_seen_write", kind: "int", def: 300, min: 1, doc: "Seconds between writes of an online account's last seen (it is also written once when the account goes offline; never on connect)." },
  { key: "presence.last_seen_flush_ms", kind: "int", def: 1000, min: 10, max: 60_000, doc: "Milliseconds between the transactions that write the last seen of accounts gone offline, held in memory meanwhile (one transaction for all, not one write per account; a crash loses at most this much, the account then shows its previous last seen)." },
  { key: "presence.max_contacts", kind: "int", def: 5000, min: 1, max: 100_000, doc: "Contacts one account may keep on the server." },
  { key: "presence.typing_rate", kind: "int", def: 5, min: 1, doc: "Typing notifications per second one account may send (token bucket refill, burst 4x); beyond it they are dropped." },
  { key: "presence.stranger_rate", kind: "int", def: 20, min: 1, doc: "Presence requests and subscriptions per minute one account may make towards strangers (accounts that never wrote to it and do not have it as a contact); beyond it they are refused with rate_limited." },
  { key: "presence.rules_cache", kind: "int", def: 100000, min: 2, max: 10_000_000, doc: "Accounts whose contacts, blocks and privacy the presence module keeps in memory (the most recently used; the others are read again from presence.db when needed, one read of ~4 small queries)." },
  { key: "presence.peer_backlog", kind: "int", def: 1024, min: 1, max: 1_000_000, doc: "Cluster mode: presence items to one other node not acknowledged yet, at most (a node that is down gets no more until it acks: typing, subscription and view items beyond it are dropped, and renewals repair the state once it is back; blocks are never dropped)." },
  { key: "presence.stranger_receipts", kind: "int", def: 10, min: 1, doc: "Delivery receipts per minute one account's devices send to a stranger (a sender it never wrote to and has not as a contact); beyond it they are dropped (the receipt-timing probe, 'Careless Whisper')." },
  { key: "modules.dir", kind: "string", def: "", doc: "Folder of handler modules (one folder per module with an index.ts), re-imported on SIGHUP or `switchboard reload`. Empty: src/modules when run from source, the modules built into the binary otherwise." },
  { key: "admission.login_rate", kind: "int", def: 0, min: 0, doc: "New logins (auth, enroll, link) per second for the whole server (token bucket refill); beyond it they get `err try_again` with a retry-after. 0: no limit." },
  { key: "admission.login_burst", kind: "int", def: 500, min: 1, doc: "New logins accepted at once before admission.login_rate applies (token bucket size)." },
  { key: "admission.max_lag_ms", kind: "int", def: 1000, min: 0, doc: "Event-loop lag (ms, the largest of the last second) above which new logins get `err try_again`; established sessions go on. 0: never." },
  { key: "admission.max_rss_mb", kind: "int", def: 0, min: 0, doc: "Resident memory (MiB) above which new logins get `err try_again`. 0: never." },
  { key: "admission.retry_after_ms", kind: "int", def: 1000, min: 100, doc: "Base retry-after (ms) of try_again refusals; each client gets a random value between it and twice it." },
  { key: "canary.interval", kind: "int", def: 5, min: 0, doc: "Seconds between end-to-end canary round trips through the server's own listener (for /readyz). 0: no canary." },
  { key: "canary.threshold", kind: "int", def: 30, min: 1, doc: "/readyz answers 503 when the last successful canary round trip is older than this many seconds." },
  { key: "shutdown.timeout", kind: "int", def: 15, min: 1, max: 300, doc: "Seconds a SIGTERM drain may take (commit, close frames, clients leaving) before the process exits anyway, with status 1." },
  { key: "shutdown.drain_delay", kind: "int", def: 0, min: 0, max: 300, doc: "Seconds between SIGTERM and closing the listeners, while /readyz already answers 503 draining and clients are still served: time for a load balancer to stop sending new ones. At most half of shutdown.timeout is used." },
  { key: "shutdown.reconnect_spread", kind: "int", def: 5, min: 1, max: 3600, doc: "On shutdown each client is told to reconnect after a random delay between 1 s and this many seconds (`close server_shutdown` with `ra`)." },
  { key: "trace.size", kind: "int", def: 10000, min: 0, doc: "About this many recent messages have their delivery traced in memory (a ring of six events per message; GET /trace, `switchboard trace`). 0: off." },
  { key: "trace.sample", kind: "int", def: 1, min: 1, doc: "Trace about one message in this many (chosen by a hash of the client id)." },
  { key: "metrics.enabled", kind: "bool", def: true, doc: "Record counters and histograms. false: they stay at 0 (gauges still work); for measuring what metrics cost." },
  // Cluster mode (docs/CLUSTER.md): off unless cluster.redis is set; nothing of it runs on the single-node path.
  { key: "cluster.redis", kind: "string", def: "", doc: "Redis URL (redis://host:port) of the cluster's lease store. Empty: a single node, no Redis (the default)." },
  { key: "cluster.node_id", kind: "string", def: "", doc: "This node's id in the cluster (letters, digits, - _ .); required with cluster.redis and must be one of cluster.nodes." },
  { key: "cluster.advertise", kind: "string", def: "", doc: "host:port at which clients (redirects) reach this node's TCP listener. Empty: tcp.host and the port tcp.port bound." },
  { key: "cluster.advertise_ws", kind: "string", def: "", doc: "ws:// or wss:// URL at which WebSocket clients reach this node (sent in redirects as `ws`, PROTOCOL.md §4.10), e.g. wss://n1.chat.example/ws behind a TLS proxy. Empty: ws://<the advertised host>:<the ws.port bound>/, else wss:// on ws.tls_port, else wss:// at ws.http_path on http.tls_port, else ws:// at ws.http_path on http.port; none if WebSocket is off." },
  { key: "cluster.nodes", kind: "string", def: "", doc: "Comma-separated ids of every node of the cluster. Home shards are placed over this list by rendezvous hashing; a shard whose node is down waits for it (its data is in that node's data_dir) and sends to it get retry_after. The cluster records the list in Redis: a node with more nodes pins the shards whose placement moves, then `cluster rebalance` moves them; one lacking a node of it is taken only once that node is drained (SIGTERM), stopped and holds no shard's data, else refused (docs/CLUSTER.md \"Adding a node\", \"Removing a node\")." },
  { key: "cluster.link_port", kind: "int", def: 0, min: 0, max: 65535, doc: "Port of this node's node-link listener (peers forward messages, receipts and directory look-ups over it), bound on the advertised host; 0 picks a free port. It is published in the node's heartbeat, so peers need no setting of it." },
  { key: "cluster.lease_ttl", kind: "int", def: 10000, min: 1500, max: 600000, doc: "Milliseconds a shard lease lives in Redis without renewal (renewed every third of it). A paused node refuses its writes before this ends." },
  { key: "cluster.iq_timeout", kind: "int", def: 15000, min: 500, max: 600000, doc: "Milliseconds a request forwarded to another node (group.* naming a group homed there, keys.fetch of an account homed there) waits for its answer; then it is answered here with retry_after {lost: true}, as when that node's link drops (a hung node keeps its link up). A request waiting here for another node's answer first (devices {u}, group changes naming accounts homed there) gets retry_after after it too. Well above a working node's slowest answer (its look-ups of other nodes, 2 s for group.list)." },
  { key: "cluster.link_held_items", kind: "int", def: 20000, min: 1, doc: "Items not kept on disk (1:1 message copies, look-ups, answers, presence) held in memory for one other node and not acknowledged by it, at most: past it (that node is down or hung), a new msg whose recipient lives there, and a gmsg or request forwarded there, are refused with retry_after." },
  { key: "cluster.link_held_bytes", kind: "int", def: 33554432, min: 1024, doc: "Bytes (estimated: body, key and about 300 bytes per item) of what cluster.link_held_items counts, at most, per other node; past it new sends towards that node are refused with retry_after in the same way." },
  { key: "cluster.move_chunk_bytes", kind: "int", def: 4194304, min: 1024, max: 8388608, doc: "Bytes (encoded) per chunk of a shard moving to another node: its rows of every kind (queued items, accounts, records, module rows) go in chunks, each durable there before the next, the lease flips after the last. At most half a link frame (16 MiB), so that the other items of the same turn fit beside it; lower only in tests." },
  // Push notifications (docs/PUSH.md): a provider is on when its credentials are set; none is by default.
  { key: "push.escalate_after", kind: "int", def: 300, min: 0, doc: "Seconds after a silent (background) wake-up at which a device whose queue is still undrained gets a visible one. 0: never a visible push." },
  { key: "push.silent_interval", kind: "int", def: 1200, min: 0, doc: "Least seconds between two silent pushes to one device (Signal's 20 min: iOS stops waking an app that gets more)." },
  { key: "push.alert_interval", kind: "int", def: 60, min: 1, doc: "Seconds per visible push token a device earns (token bucket refill), so a flood cannot make a phone buzz without end." },
  { key: "push.alert_burst", kind: "int", def: 3, min: 1, doc: "Visible pushes a device may get at once before push.alert_interval applies." },
  { key: "push.concurrency", kind: "int", def: 16, min: 1, max: 1024, doc: "Requests in flight per provider. A provider that hangs holds only these, each for at most push.timeout_ms; delivery never waits for a push." },
  { key: "push.timeout_ms", kind: "int", def: 10000, min: 100, doc: "Per-request timeout towards a provider; a request that times out is retried with backoff." },
  { key: "push.tick_ms", kind: "int", def: 250, min: 10, max: 60000, doc: "How often due push jobs are read from the queue files and handed to the providers." },
  { key: "push.batch", kind: "int", def: 512, min: 1, max: 100000, doc: "Due push jobs read per tick at most; the rest of a backlog waits in the files, not in memory." },
  { key: "push.apns.team_id", kind: "string", def: "", doc: "APNs: the 10-character Team ID (the JWT's iss). APNs is on when team_id, key_id, key_file and topic are all set." },
  { key: "push.apns.key_id", kind: "string", def: "", doc: "APNs: the Key ID of the token signing key (the JWT header's kid)." },
  { key: "push.apns.key_file", kind: "string", def: "", doc: "APNs: path of the AuthKey_<kid>.p8 file (PKCS#8 PEM, P-256)." },
  { key: "push.apns.topic", kind: "string", def: "", doc: "APNs: the app's bundle id (apns-topic); VoIP tokens get <topic>.voip." },
  { key: "push.apns.url", kind: "string", def: "https://api.push.apple.com", doc: "APNs: the HTTP/2 endpoint; https://api.sandbox.push.apple.com for development builds." },
  { key: "push.apns.ca_file", kind: "string", def: "", doc: "APNs: an extra trusted CA (PEM), for a local APNs stand-in. Empty: the system's." },
  { key: "push.fcm.service_account_file", kind: "string", def: "", doc: "FCM HTTP v1: path of the service account JSON key (project_id, client_email, private_key). FCM is on when it is set." },
  { key: "push.fcm.url", kind: "string", def: "https://fcm.googleapis.com", doc: "FCM: the API base URL." },
  { key: "push.fcm.token_url", kind: "string", def: "", doc: "FCM: the OAuth2 token endpoint. Empty: the key file's token_uri." },
  { key: "push.webpush.vapid_public", kind: "string", def: "", doc: "Web Push (and UnifiedPush): the VAPID public key, base64url (what clients pass as applicationServerKey). Web Push is on when both keys and the subject are set." },
  { key: "push.webpush.vapid_private", kind: "string", def: "", doc: "Web Push: the VAPID private key (the P-256 scalar, base64url). docs/PUSH.md shows how to make a pair." },
  { key: "push.webpush.subject", kind: "string", def: "", doc: "Web Push: the VAPID subject, mailto:ops@example.org or an https URL, so a push service can reach the operator." },
  { key: "push.webpush.allow_insecure", kind: "bool", def: false, doc: "Web Push: accept http:// and private-address endpoints. For tests only: a subscription endpoint is chosen by the client, and this lets any account make the server call into its own network." },
  { key: "push.webhook.url", kind: "string", def: "", doc: "Webhook: the operator's own push gateway (HMAC-signed JSON POSTs, docs/PUSH.md). On when url and secret are set." },
  { key: "push.webhook.secret", kind: "string", def: "", doc: "Webhook: the shared HMAC secret (at least 16 bytes)." },
  // Calls (docs/CALLS.md): signaling through this server, media through TURN relays (`switchboard relay`, or coturn with use-auth-secret).
  { key: "calls.secret", kind: "string", def: "", doc: "TURN REST shared secret(s), comma-separated, at most two: the first issues credentials, both are accepted (rotation: put the new one first, drop the old one after calls.ttl). The same value goes to every relay (coturn: static-auth-secret). Empty: no TURN credentials (iq calls.turn answers not_configured)." },
  { key: "calls.ttl", kind: "int", def: 3600, min: 60, max: 7 * 86400, doc: "Seconds TURN credentials stay valid; a relay ends an allocation at their expiry." },
  { key: "calls.turn_urls", kind: "string", def: "", doc: "Comma-separated TURN URLs handed out with credentials (turn:relay.example.org:3478?transport=udp)." },
  { key: "calls.relay_control", kind: "string", def: "", doc: "Comma-separated HTTP base URLs of our relays (http://10.0.0.5:5380): told when a device is revoked (signed), and read for their load (shedding). Empty: none." },
  { key: "calls.ring_ttl", kind: "int", def: 60, min: 5, max: 3600, doc: "Seconds a call offer is worth ringing: a ring queued for an offline device that is older than this when it connects is shown as a missed call, not rung." },
  { key: "calls.offer_rate", kind: "int", def: 20, min: 1, doc: "Call offers per minute one account may make (token bucket refill, the same as burst); beyond it an offer is refused with rate_limited." },
  { key: "calls.signal_rate", kind: "int", def: 50, min: 1, doc: "Call signals (offer, answer, ice, hangup, ...) per second one account may send (token bucket, burst twice that); beyond it a signal is refused with rate_limited." },
  { key: "calls.shed_group_at", kind: "int", def: 80, min: 1, max: 1000, doc: "Load (percent: the highest of this server's event-loop lag over calls.max_lag_ms and every relay's /load) at which new group-call offers are refused with `overloaded`. Calls in progress are never cut." },
  { key: "calls.shed_direct_at", kind: "int", def: 95, min: 1, max: 1000, doc: "Load (percent, as calls.shed_group_at) at which new one-to-one call offers are refused too." },
  { key: "calls.max_lag_ms", kind: "int", def: 500, min: 1, doc: "Event-loop lag (ms, the largest of the last second) that counts as 100 % load for shedding calls." },
  { key: "relay.host", kind: "string", def: "127.0.0.1", doc: "`switchboard relay`: UDP listen address for TURN clients." },
  { key: "relay.port", kind: "int", def: 3478, min: 0, max: 65535, doc: "`switchboard relay`: UDP port for TURN clients (3478 is TURN's); 0 picks a free one." },
  { key: "relay.public_ip", kind: "string", def: "", doc: "`switchboard relay`: the IPv4 address relayed sockets are bound on and advertised as (XOR-RELAYED-ADDRESS). Empty: relay.host." },
  { key: "relay.realm", kind: "string", def: "switchboard", doc: "`switchboard relay`: the long-term credential realm." },
  { key: "relay.min_port", kind: "int", def: 49152, min: 0, max: 65535, doc: "`switchboard relay`: lowest UDP port of relayed sockets (open it in the firewall with relay.max_port); 0 with max_port 0: any free port." },
  { key: "relay.max_port", kind: "int", def: 65535, min: 0, max: 65535, doc: "`switchboard relay`: highest UDP port of relayed sockets." },
  { key: "relay.default_lifetime", kind: "int", def: 600, min: 30, doc: "`switchboard relay`: seconds an allocation lives when the client asks for no lifetime (RFC 8656: 10 minutes); refreshed by the client." },
  { key: "relay.max_lifetime", kind: "int", def: 3600, min: 30, doc: "`switchboard relay`: longest lifetime granted per Allocate or Refresh; never past the credentials' expiry." },
  { key: "relay.pps", kind: "int", def: 2000, min: 0, doc: "`switchboard relay`: packets per second one allocation may relay, both ways summed (token bucket, one second of burst); beyond it packets are dropped and counted. 0: no cap. A video call is ~100-500." },
  { key: "relay.bps", kind: "int", def: 2_500_000, min: 0, doc: "`switchboard relay`: payload bytes per second one allocation may relay, both ways summed (20 Mbit/s by default). 0: no cap." },
  { key: "relay.per_device", kind: "int", def: 10, min: 1, max: 1000, doc: "`switchboard relay`: allocations one device may hold at once; more get 486 Allocation Quota Reached." },
  { key: "relay.max_allocations", kind: "int", def: 10000, min: 0, doc: "`switchboard relay`: allocations the relay holds at most; more get 508 Insufficient Capacity. 0: no limit." },
  { key: "relay.capacity_pps", kind: "int", def: 100_000, min: 1, doc: "`switchboard relay`: packets per second (both ways, all allocations) that count as 100 % load in /load; with allocations over relay.max_allocations, the higher of the two is the relay's load the server sheds new calls by." },
  { key: "relay.capacity_lag_ms", kind: "int", def: 200, min: 1, doc: "`switchboard relay`: event-loop lag (ms, the largest of the last second) that counts as 100 % load in /load. At 100 % (by pps, lag or allocations) the relay refuses new allocations with 508; existing ones go on." },
  { key: "relay.allow_loopback", kind: "bool", def: false, doc: "`switchboard relay`: accept loopback peer addresses (coturn's --allow-loopback-peers). For tests: a client could otherwise reach services on the relay's own host." },
  { key: "relay.http_host", kind: "string", def: "127.0.0.1", doc: "`switchboard relay`: HTTP address for /load, /metrics and the server's POST /revoke." },
  { key: "relay.http_port", kind: "int", def: 5380, min: -1, max: 65535, doc: "`switchboard relay`: HTTP port; 0 picks a free port, -1 disables it (then revocations reach the relay only as credential expiry)." },
  // Attachments (docs/MEDIA.md): encrypted blobs uploaded (tus) and downloaded on the HTTP port.
  { key: "media.store", kind: "enum", def: "disk", values: ["disk", "s3"], doc: "Where finished attachment blobs live: disk (under data_dir/media, served by this node only: in a cluster, the uploader's home node) or s3 (a bucket, media.s3_*: any node serves any blob). Uploads in progress are on this node's disk either way." },
  { key: "media.public_url", kind: "string", def: "", doc: "Base URL clients reach this node's HTTP port at (https://media.example.com, behind a TLS proxy); blob URLs are <it>/media/<id>. Empty: https://<http.host>:<the http.tls_port bound> when it is on, else http://<http.host>:<the http.port bound>." },
  { key: "media.max_file", kind: "int", def: 100 * 1024 * 1024, min: 1, doc: "Largest blob (encrypted, padded bytes) one upload may declare; media.upload beyond it is refused with too_large and the limit." },
  { key: "media.account_bytes", kind: "int", def: 2 * 1024 * 1024 * 1024, min: 1, doc: "Bytes of blobs one account may have stored at once (unfinished uploads count their declared size); beyond it media.upload is refused with quota." },
  { key: "media.daily_uploads", kind: "int", def: 1000, min: 1, doc: "Uploads one account may begin in any 24 hours; beyond it media.upload is refused with quota and when to retry." },
  { key: "media.daily_bytes", kind: "int", def: 4 * 1024 * 1024 * 1024, min: 1, doc: "Declared bytes one account may begin uploading in any 24 hours; beyond it media.upload is refused with quota and when to retry." },
  { key: "media.disk_high_water", kind: "int", def: 90, min: 1, max: 100, doc: "Percent of the data directory's file system in use above which new uploads (media.upload, PATCH) are refused (storage_unavailable, HTTP 429 with Retry-After); 100: never." },
  { key: "media.upload_ttl", kind: "int", def: 86400, min: 10, doc: "Seconds an upload capability (the token of media.upload) is valid; an upload unfinished by then is collected by the sweep." },
  { key: "media.retention", kind: "int", def: 0, min: 0, doc: "Seconds a blob is kept after its upload began; then it answers 410 and its bytes go at the next sweep. 0: queue.retention (30 days), as long as the message that carries its key may wait." },
  { key: "media.delete_after_download", kind: "bool", def: false, doc: "Delete a blob (410 from then) once it has been downloaded to its end as many times as the uploader declared recipient devices (media.upload {n}); blobs without n wait for media.retention." },
  { key: "media.sweep_every", kind: "int", def: 60, min: 1, doc: "Seconds between media sweeps: expired blobs and abandoned uploads are deleted, orphaned staging files collected." },
  { key: "media.s3_endpoint", kind: "string", def: "", doc: "S3 endpoint URL (media.store = s3), e.g. https://s3.eu-west-1.amazonaws.com or a MinIO/R2 URL. Empty: AWS from the environment (S3_ENDPOINT / AWS_ENDPOINT)." },
  { key: "media.s3_bucket", kind: "string", def: "", doc: "S3 bucket of the blobs (required with media.store = s3)." },
  { key: "media.s3_region", kind: "string", def: "", doc: "S3 region. Empty: from the environment, or us-east-1." },
  { key: "media.s3_access_key_id", kind: "string", def: "", doc: "S3 access key id. Empty: from the environment (S3_ACCESS_KEY_ID / AWS_ACCESS_KEY_ID)." },
  { key: "media.s3_secret_access_key", kind: "string", def: "", doc: "S3 secret key. Empty: from the environment (S3_SECRET_ACCESS_KEY / AWS_SECRET_ACCESS_KEY)." },
  { key: "media.s3_prefix", kind: "string", def: "blobs/", doc: "Key prefix of the blobs in the bucket." },
  { key: "log.level", kind: "enum", def: "info", values: ["debug", "info", "warn", "error"], doc: "Log verbosity (logs are JSON lines on stderr)." },
];

export interface Config {
  dataDir: string;
  tcp: { host: string; port: number };
  tls: { host: string; port: number; cert: string; key: string; maxVersion: "1.3" | "1.2"; groups: string };
  ws: { host: string; port: number; tlsPort: number; httpPath: string; origins: string };
  http: { host: string; port: number; tlsPort: number; app: boolean };
  limits: {
    maxFrame: number; maxDevices: number; outboundBytes: number; window: number; errorBudget: number;
    maxConnections: number; sendRate: number; sendBurst: number;
  };
  timeouts: { pingInterval: number; idle: number; auth: number; sweep: number; link: number };
  auth: { enrollCodeTtl: number; failPerIp: number; failPerAccount: number; ticketLifetime: number };
  queue: {
    shards: number; commitMs: number; commitRows: number; durability: "process" | "power"; committer: "inline" | "worker"; sentRides: boolean;
    retention: number; dedupTtl: number; expireEvery: number; maxMessages: number; maxBytes: number;
  };
  modules: { dir: string };
  log: { level: "debug" | "info" | "warn" | "error" };
  media: {
    store: "disk" | "s3"; publicUrl: string; maxFile: number; accountBytes: number; dailyUploads: number; dailyBytes: number;
    diskHighWater: number; uploadTtl: number; retention: number; deleteAfterDownload: boolean; sweepEvery: number;
    s3Endpoint: string; s3Bucket: string; s3Region: string; s3AccessKeyId: string; s3SecretAccessKey: string; s3Prefix: string;
  };
  admission: { loginRate: number; loginBurst: number; maxLagMs: number; maxRssMb: number; retryAfterMs: number };
  canary: { interval: number; threshold: number };
  shutdown: { timeout: number; drainDelay: number; reconnectSpread: number };
  trace: { size: number; sample: number };
  metrics: { enabled: boolean };
  groups: { maxMembers: number; maxPerAccount: number };
  keys: { maxOtk: number; lowOtk: number; fetchRate: number; fetchBurst: number };
  cluster: { redis: string; nodeId: string; advertise: string; advertiseWs: string; nodes: string; linkPort: number; leaseTtl: number; iqTimeout: number; linkHeldItems: number; linkHeldBytes: number; moveChunkBytes: number };
  presence: {
    defaultPolicy: "everyone" | "contacts" | "nobody"; graceMs: number; coalesceMs: number; leaseMs: number; maxSubs: number;
    lastSeenWrite: number; lastSeenFlushMs: number; maxContacts: number; typingRate: number; strangerRate: number; strangerReceipts: number; rulesCache: number; peerBacklog: number;
  };
  push: {
    escalateAfter: number; silentInterval: number; alertInterval: number; alertBurst: number; concurrency: number; timeoutMs: number; tickMs: number; batch: number;
    apns: { teamId: string; keyId: string; keyFile: string; topic: string; url: string; caFile: string };
    fcm: { serviceAccountFile: string; url: string; tokenUrl: string };
    webpush: { vapidPublic: string; vapidPrivate: string; subject: string; allowInsecure: boolean };
    webhook: { url: string; secret: string };
  };
  calls: {
    secret: string; ttl: number; turnUrls: string; relayControl: string; ringTtl: number; offerRate: number; signalRate: number; shedGroupAt: number; shedDirectAt: number; maxLagMs: number;
  };
  relay: {
    host: string; port: number; publicIp: string; realm: string; minPort: number; maxPort: number; defaultLifetime: number;
    maxLifetime: number; pps: number; bps: number; perDevice: number; maxAllocations: number; capacityPps: number; capacityLagMs: number; allowLoopback: boolean; httpHost: string; httpPort: number;
  };
}

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
export const flagName = (key: string) => "--" + key.replace(/[._]/g, "-");
export const envName = (key: string) => "SWITCHBOARD_" + key.replace(/\./g, "_").toUpperCase();

/**
 * A raw value as its setting's type. `typed`: it comes from the TOML file, where
 * numbers and booleans have types of their own, so `port = "6222"` is refused
 * (flags and the environment are strings by nature).
 */
function coerce(s: Setting, raw: unknown, source: string, typed = false): string | number | boolean {
  const where = `${s.key} (from ${source})`;
  switch (s.kind) {
    case "string":
      if (typeof raw !== "string") throw new Error(`config: ${where} must be a string`);
      return raw;
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (typed && typeof raw === "string") throw new Error(`config: ${where} must be true or false, got the string ${JSON.stringify(raw)} (write it without quotes)`);
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw new Error(`config: ${where} must be true or false, got ${JSON.stringify(raw)}`);
    case "enum":
      if (typeof raw !== "string" || !s.values!.includes(raw)) throw new Error(`config: ${where} must be one of ${s.values!.join(", ")}, got ${JSON.stringify(raw)}`);
      return raw;
    case "int": {
      if (typed && typeof raw === "string" && /^-?\d+$/.test(raw.trim())) {
        throw new Error(`config: ${where} must be an integer, got the string ${JSON.stringify(raw)} (write it without quotes)`);
      }
      const n = typeof raw === "number" ? raw : typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) throw new Error(`config: ${where} must be an integer, got ${JSON.stringify(raw)}`);
      if (s.min !== undefined && n < s.min) throw new Error(`config: ${where} must be at least ${s.min}, got ${n}`);
      if (s.max !== undefined && n > s.max) throw new Error(`config: ${where} must be at most ${s.max}, got ${n}`);
      return n;
    }
  }
}

function lookup(obj: unknown, key: string): unknown {
  let cur = obj;
  for (const part of key.split(".")) {
    if (!isTable(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** A TOML table: a plain object (dates and times parse to other objects, which are values). */
const isTable = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v) && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);

/**
 * Where a TOML text stops being valid: the line after the longest prefix of
 * whole lines that still parses (Bun's parser does not say where it failed).
 * A multi-line value that is never closed is reported at its first line.
 */
function tomlErrorLine(text: string): number {
  const lines = text.split("\n");
  for (let n = lines.length - 1; n > 0; n--) {
    try {
      Bun.TOML.parse(lines.slice(0, n).join("\n"));
      return n + 1;
    } catch {}
  }
  return 1;
}

/** Edit distance, for "did you mean" hints on misspelt keys and flags. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The candidate closest to `name`, when it is close enough to be a likely typo; else undefined. */
export function closest(name: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(name, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(2, Math.floor(name.length / 4)) ? best : undefined;
}

/** Every flag that sets a configuration value, plus `--config`. */
export const CONFIG_FLAGS: ReadonlySet<string> = new Set(["--config", ...SETTINGS.map((s) => flagName(s.key))]);

export type Value = string | number | boolean;
export interface ResolvedSettings {
  /** Dotted key -> value. */
  values: Record<string, Value>;
  /** Dotted key -> where the value came from: "default", the file path, the variable or the flag. */
  sources: Record<string, string>;
  /** The configuration file read, if any. */
  file?: string;
}

/**
 * Resolves every setting and remembers where each value came from. Throws a
 * message naming the setting and the source when a value is wrong.
 */
export function resolveSettings(opts: { file?: string; env?: Record<string, string | undefined>; flags?: Record<string, string> } = {}): ResolvedSettings {
  const env = opts.env ?? process.env;
  const flags = opts.flags ?? {};
  const fileFrom = opts.file !== undefined ? "" : flags["--config"] !== undefined ? "--config" : env.SWITCHBOARD_CONFIG ? "SWITCHBOARD_CONFIG" : "";
  const file = opts.file ?? flags["--config"] ?? (env.SWITCHBOARD_CONFIG || undefined);
  const fileLabel = fileFrom ? `${file} (from ${fileFrom})` : `${file}`;
  let fromFile: unknown = {};
  // Every problem is collected and reported together: fixing a file one error per run is tedious.
  const errors: string[] = [];
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      errors.push((e as Error).message);
    }
  };
  if (file !== undefined) {
    if (file === "") throw new Error(`config: ${fileFrom || "the configuration file"} is empty; give the path of a TOML file`);
    if (!existsSync(file)) throw new Error(`config: file ${fileLabel} does not exist`);
    const text = readFileSync(file, "utf8");
    try {
      fromFile = Bun.TOML.parse(text);
    } catch (e) {
      throw new Error(`config: ${fileLabel} is not valid TOML: line ${tomlErrorLine(text)}: ${(e as Error).message.replace(/^TOML Parse error: /, "")}`);
    }
    const known = new Set(SETTINGS.map((s) => s.key));
    const walk = (o: Record<string, unknown>, prefix: string) => {
      for (const [k, v] of Object.entries(o)) {
        const key = prefix ? `${prefix}.${k}` : k;
        if (isTable(v)) walk(v, key);
        else if (!known.has(key)) {
          const hint = closest(key, known);
          errors.push(`config: ${fileLabel} sets unknown key ${key}${hint ? ` (did you mean ${hint}?)` : ""}; \`switchboard config\` lists them all`);
        }
      }
    };
    walk(fromFile as Record<string, unknown>, "");
  }
  const values: Record<string, Value> = {};
  const sources: Record<string, string> = {};
  for (const s of SETTINGS) {
    let v: Value = s.def;
    let src = "default";
    const f = lookup(fromFile, s.key);
    if (f !== undefined) attempt(() => ([v, src] = [coerce(s, f, file!, true), file!]));
    const e = env[envName(s.key)];
    if (e !== undefined && e !== "") attempt(() => ([v, src] = [coerce(s, e, envName(s.key)), envName(s.key)]));
    const fl = flags[flagName(s.key)];
    if (fl !== undefined) attempt(() => ([v, src] = [coerce(s, fl, flagName(s.key)), flagName(s.key)]));
    values[s.key] = v;
    sources[s.key] = src;
  }
  const idle = values["timeouts.idle"] as number;
  const ping = values["timeouts.ping_interval"] as number;
  if (idle <= ping) {
    const from = (k: string) => (sources[k] === "default" ? "default" : `from ${sources[k]}`);
    errors.push(
      `config: timeouts.idle (${idle}, ${from("timeouts.idle")}) must exceed timeouts.ping_interval (${ping}, ${from("timeouts.ping_interval")}), or every client is reaped between pings`,
    );
  }
  const wsPath = values["ws.http_path"] as string;
  if (wsPath !== "" && !/^\/[^\s?#]*$/.test(wsPath)) {
    errors.push(`config: ws.http_path (${JSON.stringify(wsPath)}, from ${sources["ws.http_path"]}) must be a path starting with "/", such as "/ws", or empty`);
  }
  if (Boolean(values["tls.cert"]) !== Boolean(values["tls.key"])) {
    const [set, unset] = values["tls.cert"] ? ["tls.cert", "tls.key"] : ["tls.key", "tls.cert"];
    errors.push(`config: ${set} is set (from ${sources[set]}) but ${unset} is not; give both, or neither for the development certificate`);
  }
  errors.push(...clusterSettingErrors(values, sources));
  if (errors.length) throw new Error(errors.join("\n"));
  const r: ResolvedSettings = { values, sources };
  if (file !== undefined) r.file = file;
  return r;
}

/**
 * What `serve` refuses beyond the values themselves: certificate files that do
 * not exist (`config --check` runs it too, so that it passes only what serve accepts).
 */
export function checkSettings(r: ResolvedSettings): void {
  const errors: string[] = [];
  if (["tls.port", "ws.tls_port", "http.tls_port"].some((k) => (r.values[k] as number) >= 0)) {
    for (const k of ["tls.cert", "tls.key"]) {
      const path = r.values[k] as string;
      if (path && !existsSync(path)) errors.push(`config: ${k} (from ${r.sources[k]}): file ${path} does not exist`);
    }
  }
  if (errors.length) throw new Error(errors.join("\n"));
}

/**
 * Builds the configuration. `flags` maps flag names (with the leading `--`)
 * to raw values; unknown flags are the caller's business. Throws a message
 * naming the setting and the source when a value is wrong.
 */
export function loadConfig(opts: { file?: string; env?: Record<string, string | undefined>; flags?: Record<string, string> } = {}): Config {
  return configFrom(resolveSettings(opts));
}

/** The configuration of resolved settings (nested, camel-cased). */
export function configFrom({ values }: ResolvedSettings): Config {
  // Nest and camel-case: "limits.max_frame" -> cfg.limits.maxFrame.
  const cfg: Record<string, any> = {};
  for (const [key, v] of Object.entries(values)) {
    const parts = key.split(".").map(camel);
    let cur = cfg;
    for (const p of parts.slice(0, -1)) cur = cur[p] ??= {};
    cur[parts[parts.length - 1]!] = v;
  }
  cfg.dataDir = resolve(cfg.dataDir);
  return cfg as Config;
}

/** The effective configuration as TOML, each value commented with its source (`switchboard config --check`). */
export function effectiveToml(r: ResolvedSettings): string {
  const lines: string[] = [];
  let table = "";
  for (const s of SETTINGS) {
    const dot = s.key.lastIndexOf(".");
    const t = dot < 0 ? "" : s.key.slice(0, dot);
    const name = s.key.slice(dot + 1);
    if (t !== table) {
      lines.push("", `[${t}]`);
      table = t;
    }
    const v = r.values[s.key]!;
    const src = r.sources[s.key]!;
    lines.push(`${name} = ${typeof v === "string" ? JSON.stringify(v) : String(v)}${src === "default" ? "" : `  # from ${src}`}`);
  }
  return lines.join("\n").trimStart();
}

/** What a setting accepts, for the table: "1..64", "at least 60", "process | power". */
function allowed(s: Setting): string {
  if (s.kind === "enum") return s.values!.map((v) => `\`${v}\``).join(" \\| ");
  if (s.kind !== "int") return "";
  if (s.min !== undefined && s.max !== undefined) return `${s.min}..${s.max}`;
  if (s.min !== undefined) return `≥ ${s.min}`;
  return s.max !== undefined ? `≤ ${s.max}` : "";
}

/** Markdown table of every setting, for the README (`switchboard config` prints it; tools/gen-config-doc.ts writes it). */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => {
    const def = s.def === "" ? "*(none)*" : `\`${String(s.def)}\``;
    return `| \`${s.key}\` | \`${flagName(s.key)}\` | \`${envName(s.key)}\` | ${def} | ${allowed(s)} | ${s.doc} |`;
  });
  return ["| key (TOML) | flag | environment | default | allowed | meaning |", "|---|---|---|---|---|---|", ...rows].join("\n");
}
