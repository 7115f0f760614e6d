/** `switchboard user code NAME`: a new enrollment code for an existing account; the earlier ones stop working (src/cli/accounts.ts). */
import { userCommand } from "../accounts.ts";

export default userCommand("user code");
