/** Moved to src/protocol/bytes.ts (the transport uses it too); re-exported for the crypto code that imports it here. */
export { concat } from "../../protocol/bytes.ts";
