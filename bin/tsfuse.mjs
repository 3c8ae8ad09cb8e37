#!/usr/bin/env node
// The `tsfuse` command: loads the TypeScript sources through tsx, so users need no build step.
import { register } from 'tsx/esm/api';

register();
await import('../compiler/cli.ts');
