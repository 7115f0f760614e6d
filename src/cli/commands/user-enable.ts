/** `switchboard user enable NAME`: a disabled account may log in again. */
import { userSwitch } from "../admin.ts";

export default userSwitch("enable");
