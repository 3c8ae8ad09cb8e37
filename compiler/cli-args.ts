// What every command of the command line shares: an option table (type, default, help) that parses, validates and
// prints itself, the usage error, and the checks of common values (ids, numbers, backends, checkpoint folders).

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { MegakernelOptions } from '../backends/cuda/megakernel.ts';
import { DeviceKind, deviceKinds, isDeviceKind } from '../runtime/device.ts';
import { defaultScriptLimits, type ScriptLimits } from './script-limits.ts';

/** Bad command-line input: printed as one line, exit code 1. */
export class UsageError extends Error {}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly default?: string | boolean;
  readonly short?: string;
  /** The value's placeholder in help (`--model DIR`). */
  readonly value?: string;
  readonly help: string;
}

export type Options = Readonly<Record<string, OptionSpec>>;

type ValueOf<S> = S extends { type: 'boolean' } ? boolean : string;
export type Values<O extends Options> = {
  -readonly [K in keyof O]: O[K] extends { default: string | boolean } ? ValueOf<O[K]> : ValueOf<O[K]> | undefined;
};

/** One command: its synopsis, what it does, its options, and what it runs. */
export interface CliCommand<O extends Options = Options> {
  /** After `tsfuse NAME`: the required arguments (`--model DIR --ids 5,9,13`). */
  readonly synopsis: string;
  /** A few lines on what it does and prints. */
  readonly about: string;
  readonly options: O;
  /** Takes positional arguments (files). */
  readonly positionals?: boolean;
  run(values: Values<O>, positionals: string[]): void | Promise<void>;
}

/** Declares a command with its option types inferred. */
export function defineCommand<O extends Options>(c: CliCommand<O>): CliCommand {
  return c as unknown as CliCommand;
}

export function parseOptions<O extends Options>(name: string, args: string[], options: O, positionals = false) {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; default?: string | boolean }> = {};
  for (const [k, o] of Object.entries(options)) {
    config[k] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.default !== undefined ? { default: o.default } : {}) };
  }
  try {
    const r = parseArgs({ args, options: config, allowPositionals: positionals, strict: true });
    return { values: r.values as Values<O>, positionals: r.positionals };
  } catch (e) {
    const message = (e as Error).message;
    const m = /^Unknown option '([^']+)'/.exec(message);
    if (m) throw new UsageError(`unknown option ${m[1]} (see tsfuse ${name} --help)`);
    // `--seed -1`: parseArgs takes -1 for an option and explains over three lines.
    const ambiguous = /^Option '(-[^' ]+)[^']*' argument is ambiguous/.exec(message);
    if (ambiguous) throw new UsageError(`${ambiguous[1]} needs a value (one that starts with a dash is written ${ambiguous[1]}=-1)`);
    throw new UsageError(message.replace(/\. To specify a positional argument.*$/s, '').split('\n')[0]);
  }
}

/** `tsfuse NAME --help`: the synopsis, what it does, and every option with its default. */
export function formatHelp(name: string, c: CliCommand): string {
  const rows = Object.entries(c.options).map(([k, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${k}${o.value ? ` ${o.value}` : ''}`;
    const def = o.default !== undefined && o.default !== false && o.default !== '' ? ` (default: ${o.default})` : '';
    return [flag, o.help + def] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return `usage: tsfuse ${name} ${c.synopsis}\n\n${c.about}\n\noptions:\n` +
    rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`).join('\n');
}

// --- shared options and value checks ----------------------------------------------------------------------------

export const backendOption = {
  type: 'string', default: 'cpu', value: 'NAME', help: `where the kernels run: ${deviceKinds.join(', ')}`,
} as const;
export const jsonOption = { type: 'boolean', default: false, help: 'print the result as one line of JSON' } as const;
export const modelOption = {
  type: 'string', value: 'DIR', help: 'a Hugging Face Llama checkpoint folder (config.json, model.safetensors)',
} as const;

/** A model script is loaded and traced first in a worker thread under these limits (compiler/script-limits.ts). */
export const scriptLimitOptions = {
  timeout: {
    type: 'string', default: String(defaultScriptLimits.timeoutSeconds), value: 'SECONDS',
    help: 'model scripts: how long loading the script and tracing its entry may take (in a worker thread, first)',
  },
  'max-memory': {
    type: 'string', default: String(defaultScriptLimits.maxMemoryMb), value: 'MB',
    help: 'model scripts: how much JavaScript heap loading and tracing it may use',
  },
} as const;

export function scriptLimits(values: { timeout: string; 'max-memory': string }): ScriptLimits {
  const seconds = Number(values.timeout);
  // setTimeout takes at most 2^31 - 1 ms.
  if (values.timeout.trim() === '' || !(seconds > 0) || seconds * 1000 > 2 ** 31 - 1) {
    throw new UsageError(`--timeout must be a number of seconds, more than 0 and at most ${Math.floor((2 ** 31 - 1) / 1000)}, got '${values.timeout}'`);
  }
  return { timeoutSeconds: seconds, maxMemoryMb: positiveInt(values['max-memory'], '--max-memory') };
}

export function required(v: string | undefined, flag: string): string {
  if (v === undefined) throw new UsageError(`${flag} is required`);
  return v;
}

export function parseIds(text: string | undefined): number[] {
  const ids = required(text, '--ids').split(',').map((s) => s.trim());
  const bad = ids.find((s) => !/^\d+$/.test(s));
  if (bad !== undefined) throw new UsageError(`--ids must be comma-separated token ids, got '${bad}'`);
  return ids.map(Number);
}

export function positiveInt(text: string, flag: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${flag} must be a positive integer, got '${text}'`);
  return Number(text);
}

/** The megakernel's flags, each given only with --megakernel. */
export const megakernelFlags = {
  'megakernel-blocks': { type: 'string', value: 'N', help: 'with --megakernel: blocks each multiprocessor runs (default 2; a device that holds fewer refuses, saying how many)' },
  'megakernel-stream': { type: 'boolean', default: false, help: 'with --megakernel: stream each row\'s weights through pages of shared memory that the copy engine fills ahead of the rows, across the waits between kernels (compute capability 9.0)' },
} as const;

/**
 * --megakernel's options from its flags (--megakernel-blocks N: a positive integer; --megakernel-stream), each
 * refused without --megakernel; undefined without it.
 */
export function megakernelOptionsOf(values: { readonly megakernel?: boolean; readonly 'megakernel-blocks'?: string; readonly 'megakernel-stream'?: boolean }): MegakernelOptions | undefined {
  const blocks = values['megakernel-blocks'];
  if (!values.megakernel) {
    if (blocks !== undefined) throw new UsageError('--megakernel-blocks needs --megakernel');
    if (values['megakernel-stream']) throw new UsageError('--megakernel-stream needs --megakernel');
    return undefined;
  }
  return { ...(blocks !== undefined ? { blocksPerProcessor: positiveInt(blocks, '--megakernel-blocks') } : {}), ...(values['megakernel-stream'] ? { streamWeights: true } : {}) };
}

export function nonNegative(text: string, flag: string): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < 0) throw new UsageError(`${flag} must be a non-negative number, got '${text}'`);
  return v;
}

export function checkBackend(name: string): DeviceKind {
  if (!isDeviceKind(name)) throw new UsageError(`--backend: unknown backend '${name}' (available: ${deviceKinds.join(', ')})`);
  return name;
}

/** Checks that the folder exists first, so a typo reads as one, not as a failed read of config.json. */
export function checkModelDir(dir: string | undefined): string {
  const model = required(dir, '--model');
  let isDir: boolean;
  try {
    isDir = fs.statSync(model).isDirectory();
  } catch {
    throw new UsageError(`--model ${model}: no such directory`);
  }
  if (!isDir) throw new UsageError(`--model ${model}: not a directory (give the checkpoint folder)`);
  return model;
}
