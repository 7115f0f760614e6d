/** `switchboard group add GROUP MEMBER...` (admins). */
import { membersCommand } from "./group-members.ts";

export default membersCommand("add");
