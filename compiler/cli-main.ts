// The tsfuse command line: each command is one entry in the table below, its module loaded only when it runs (so
// `--help` and `--version` load nothing else), and main(argv), which runs one command line and resolves to the exit
// code. Results go to stdout; timing, statistics and progress to stderr. Errors go to stderr as one readable line,
// exit code 1. cli.ts runs main() as the process; the tests call it in-process too (test/tsfuse-cli.ts).

import fs from 'node:fs';
import type { CliCommand } from './cli-args.ts';
import { logTopics, setLogs } from '../ir/logs.ts';

interface CommandEntry {
  /** One line for `tsfuse --help`. */
  readonly summary: string;
  readonly load: () => Promise<CliCommand>;
}

const commands: Record<string, CommandEntry> = {
  generate: {
    summary: 'decode after a prompt (--ids or --prompt); streams the new tokens, timing on stderr',
    load: async () => (await import('./cli-generate.ts')).generateCommand,
  },
  logits: {
    summary: 'logits at every prompt position, from one forward pass',
    load: async () => (await import('./cli-model.ts')).logitsCommand,
  },
  compile: {
    summary: 'run the pass pipeline on the Llama graphs or a model script (report, IR, kernels, schedules, --out)',
    load: async () => (await import('./cli-compile-command.ts')).compileCommand,
  },
  trace: {
    summary: 'trace the Llama prefill and decode graphs (--dump-ir prints them as IR text)',
    load: async () => (await import('./cli-model.ts')).traceCommand,
  },
  inspect: {
    summary: 'parse and verify an IR text file and print it back (--stats: op counts)',
    load: async () => (await import('./cli-inspect.ts')).inspectCommand,
  },
  run: {
    summary: 'compile and run an IR text file (edited or dumped) on a backend, with inputs given on the command line',
    load: async () => (await import('./cli-run.ts')).runCommand,
  },
  bisect: {
    summary: 'find the first kernel whose values differ from the reference interpreter (or another backend); exit 1 if one does',
    load: async () => (await import('./cli-bisect.ts')).bisectCommand,
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length)) + 2;
  return `usage: tsfuse <command> [options]

commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`).join('\n')}

  tsfuse <command> --help   the command's options and their defaults
  tsfuse --version

environment:
  TSFUSE_LOGS=fusion,kernels,schedule,recompiles   print what the compiler decided, on stderr (all: every topic)
  TSFUSE_DEBUG=1                                   stack traces for internal errors`;
}

function version(): string {
  const up = import.meta.url.includes('/dist/compiler/') ? '../../package.json' : '../package.json';
  const pkg = JSON.parse(fs.readFileSync(new URL(up, import.meta.url), 'utf8')) as { version: string };
  return String(pkg.version);
}

/** `--dump-ir` alone is the final IR; `--dump-ir after:fuse` (a space, not `=`) is read as its value. */
function normalizeDumpIr(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] !== '--dump-ir') out.push(args[i]);
    else if (/^(all|final|after:.+)$/.test(args[i + 1] ?? '')) out.push(`--dump-ir=${args[++i]}`);
    else out.push('--dump-ir=final');
  }
  return out;
}

/** Runs one command line (the arguments after `tsfuse`); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === '-v') {
    console.log(version());
    return 0;
  }
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    if (command === 'help' && rest[0] && commands[rest[0]]) return main([rest[0], '--help']);
    (command ? console.log : console.error)(usage());
    return command ? 0 : 1;
  }
  try {
    const entry = commands[command];
    if (!entry) {
      const { UsageError } = await import('./cli-args.ts');
      throw new UsageError(`unknown command '${command}'\nusage: tsfuse <command> [options], a command among ${Object.keys(commands).join(', ')} (tsfuse --help)`);
    }
    const unknownLogs = setLogs(process.env.TSFUSE_LOGS ?? '');
    if (unknownLogs.length > 0) {
      const { UsageError } = await import('./cli-args.ts');
      throw new UsageError(`TSFUSE_LOGS: unknown topic '${unknownLogs[0]}' (topics: ${logTopics.join(', ')}, or all)`);
    }
    const cmd = await entry.load();
    const { formatHelp, parseOptions } = await import('./cli-args.ts');
    if (rest.includes('--help') || rest.includes('-h')) {
      console.log(formatHelp(command, cmd));
      return 0;
    }
    const { values, positionals } = parseOptions(command, normalizeDumpIr(rest), cmd.options, cmd.positionals);
    // Spinners for long steps on a terminal, not under --json.
    const { setSpinners, showProgress } = await import('../runtime/progress.ts');
    setSpinners(showProgress((values as { json?: unknown }).json === true));
    await cmd.run(values, positionals);
    return 0;
  } catch (e) {
    const { isUserError, userMessage } = await import('./cli-errors.ts');
    if (await isUserError(e)) {
      console.error(`tsfuse ${command}: ${userMessage(e as Error)}`);
    } else {
      console.error(`tsfuse ${command}: internal error: ${(e as Error).message}`);
      if (process.env.TSFUSE_DEBUG) console.error((e as Error).stack);
      else console.error('(set TSFUSE_DEBUG=1 for the stack trace)');
    }
    return 1;
  }
}
