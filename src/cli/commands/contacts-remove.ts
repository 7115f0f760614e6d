/** `switchboard contacts remove NAME...`. */
import { contactsCommand } from "./contacts-edit.ts";

export default contactsCommand("remove");
