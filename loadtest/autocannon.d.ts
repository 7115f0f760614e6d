/** autocannon 9 ships no types (and @types/autocannon is not a dependency): the http scenario uses it untyped. */
declare module "autocannon";
