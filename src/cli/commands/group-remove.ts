/** `switchboard group remove GROUP MEMBER...` (admins). */
import { membersCommand } from "./group-members.ts";

export default membersCommand("remove");
