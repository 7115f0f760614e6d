/** `switchboard user disable NAME`: its logins are refused (`account_disabled`) and its sessions close; its data stays. */
import { userSwitch } from "../admin.ts";

export default userSwitch("disable");
