// TSFUSE_LOGS=fusion,kernels,schedule,recompiles (or all): what the compiler decided, printed on stderr as it
// decides it, as torch.compile's TORCH_LOGS does. In ir/, the bottom layer, so every layer can log; in a browser
// (no process) nothing is enabled unless setLogs() is called.

export const logTopics = ['fusion', 'kernels', 'schedule', 'recompiles'] as const;
export type LogTopic = (typeof logTopics)[number];

let enabled = parseLogs((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TSFUSE_LOGS ?? '');

function parseLogs(spec: string): Set<LogTopic> {
  const names = spec.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.includes('all')) return new Set(logTopics);
  return new Set(names.filter((n): n is LogTopic => (logTopics as readonly string[]).includes(n)));
}

/** Enables topics from a TSFUSE_LOGS-style list; returns the names it did not know. */
export function setLogs(spec: string): string[] {
  enabled = parseLogs(spec);
  return spec.split(',').map((s) => s.trim()).filter((n) => n && n !== 'all' && !(logTopics as readonly string[]).includes(n));
}

export function logsOn(topic: LogTopic): boolean {
  return enabled.has(topic);
}

/** Prints each line of `text` as `[tsfuse:topic] line` on stderr (the console in a browser). */
export function log(topic: LogTopic, text: string): void {
  if (!enabled.has(topic)) return;
  const lines = text.replace(/\n$/, '').split('\n').map((l) => `[tsfuse:${topic}] ${l}`).join('\n');
  const proc = (globalThis as { process?: { stderr?: { write(s: string): void } } }).process;
  if (proc?.stderr) proc.stderr.write(lines + '\n');
  else console.debug(lines);
}
