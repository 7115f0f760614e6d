/** JSON-lines logger on stderr. Cheap when a level is off: callers pass fields, not formatted strings. */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type Level = keyof typeof LEVELS;

let threshold: number = LEVELS.info;
export function setLogLevel(level: Level): void {
  threshold = LEVELS[level];
}

function emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (LEVELS[level] < threshold) return;
  const line: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...fields };
  process.stderr.write(JSON.stringify(line, (_k, v) => (v instanceof Error ? v.message : typeof v === "bigint" ? String(v) : v)) + "\n");
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit("error", msg, fields),
  enabled: (level: Level) => LEVELS[level] >= threshold,
};
