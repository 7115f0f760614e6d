/**
 * Named checks run one after another, each answering `true` or what went
 * wrong: for contracts that run both in Bun and, bundled, in a browser page,
 * where bun:test is not available (test/client/crypto-vectors.ts,
 * test/client/storage-contract.ts). No node:* import.
 */
export interface Outcome {
  name: string;
  ok: boolean;
  /** What came out, when it was not the expected answer. */
  got?: string;
}

export type Case<T> = [name: string, run: (subject: T) => Promise<true | string>];

export async function runCases<T>(cases: readonly Case<T>[], subject: T): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const [name, run] of cases) {
    try {
      const r = await run(subject);
      out.push(r === true ? { name, ok: true } : { name, ok: false, got: r });
    } catch (e) {
      out.push({ name, ok: false, got: `threw ${(e as Error).name}: ${(e as Error).message}` });
    }
  }
  return out;
}

/** The failed ones, as lines for an assertion's diff. */
export const failures = (o: readonly Outcome[]): string[] => o.filter((x) => !x.ok).map((x) => `${x.name}: ${x.got}`);
