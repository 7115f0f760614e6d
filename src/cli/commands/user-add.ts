/** `switchboard user add NAME`: creates an account and prints its first enrollment code (src/cli/accounts.ts). */
import { userCommand } from "../accounts.ts";

export default userCommand("user add");
