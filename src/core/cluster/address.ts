/**
 * A heartbeat's address: `host:port` for clients, then `/` and the node-link port (cluster.link_port), then a space
 * and the WebSocket URL for clients (cluster.advertise_ws) when the node has one.
 * Peers of an older build would read the whole as the client address; every node of a cluster runs one build.
 */
export function splitAddress(address: string): { host: string; port: number; link: number | null; ws: string | null } {
  const space = address.indexOf(" "), a = space < 0 ? address : address.slice(0, space);
  const slash = a.indexOf("/");
  const client = slash < 0 ? a : a.slice(0, slash), colon = client.lastIndexOf(":");
  return { host: client.slice(0, colon), port: Number(client.slice(colon + 1)), link: slash < 0 ? null : Number(a.slice(slash + 1)), ws: space < 0 ? null : address.slice(space + 1) };
}
