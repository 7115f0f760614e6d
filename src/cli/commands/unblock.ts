/** `switchboard unblock NAME`. */
import { blockCommand } from "./block.ts";

export default blockCommand("unblock");
