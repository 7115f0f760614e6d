/**
 * The full privacy matrix (test/presence/matrix.ts: policy × reciprocity × contact or not × blocked or not, a
 * capture of every frame, no forbidden field, every allowed one arrives, typing only where allowed) with every
 * watcher homed on a different node than its targets: 3 real `switchboard serve` processes and a private
 * redis-server; the 9 targets live on n1, the 36 viewers alternate between n2 and n3. So every subscription,
 * look, frame and typing notice crosses a node link, and every check is the home's (cluster.ts) with the
 * viewer's half forwarded by its node, and the blocks kept at the blocked account's home.
 */
import { test } from "bun:test";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import { rawLogin } from "../wire/util.ts";
import { MATRIX_ARGS, runMatrix } from "../presence/matrix.ts";

const { nodes } = threeNodes(4000, MATRIX_ARGS);

test("the privacy matrix with watcher and target on different nodes", async () => {
  await runMatrix({
    target: (i) => accountOn("n1", `mt${i}_`),
    viewer: (i) => accountOn(i % 2 ? "n3" : "n2", `mv${i}_`),
    login: async (a) => {
      const srv = nodes.get(homeOf(a))!;
      return rawLogin(srv, await srv.newDevice(a));
    },
  });
}, 180_000);
