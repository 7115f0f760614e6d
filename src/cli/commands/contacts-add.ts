/** `switchboard contacts add NAME...`. */
import { contactsCommand } from "./contacts-edit.ts";

export default contactsCommand("add");
