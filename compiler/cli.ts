// The tsfuse command's process (bin/tsfuse.mjs imports this): main() of cli-main.ts on the process's arguments, its
// result the exit code.

import { main } from './cli-main.ts';

// `tsfuse ... | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});
process.exitCode = await main(process.argv.slice(2));
