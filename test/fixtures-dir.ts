// Where the shared fixtures are: ../shared/fixtures beside the clone, or TSFUSE_FIXTURES where they lie elsewhere
// (the GPU machine, where a device run carries them in an ignored folder).

import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const fixturesDir = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../shared/fixtures/', import.meta.url));

/** The folder of fixture `name` (e.g. tiny-llama). */
export const fixture = (name: string): string => path.join(fixturesDir, name);
