// `tsfuse inspect FILE.ir`: parses and verifies an IR text file and prints it back, or its op counts.

import { parseModule } from '../ir/parser.ts';
import { printModule } from '../ir/printer.ts';
import { defineCommand, UsageError } from './cli-args.ts';
import { readTextFile } from './cli-files.ts';

/** Reads an IR file, naming it in the error when it cannot be read. */
export function readIrFile(file: string): string {
  return readTextFile(file, 'an IR file');
}

export const inspectCommand = defineCommand({
  synopsis: 'FILE.ir [--stats]',
  about: 'Parses an IR text file, verifies it and prints it back (byte-identical for a file tsfuse printed).\n' +
    'A mistake is reported as file:line:column with the line and a caret.',
  options: { stats: { type: 'boolean', default: false, help: 'print the node count of each graph by op instead' } },
  positionals: true,
  run(values, positionals) {
    if (positionals.length !== 1) throw new UsageError('inspect takes one IR file');
    const file = positionals[0];
    const module = parseModule(readIrFile(file), file);
    if (!values.stats) {
      process.stdout.write(printModule(module));
      return;
    }
    for (const g of module.graphs) {
      const counts = new Map<string, number>();
      for (const n of g.nodes) counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
      console.log(`@${g.name}: ${g.nodes.length} nodes`);
      for (const [op, n] of [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) console.log(`  ${op.padEnd(14)} ${n}`);
    }
  },
});
