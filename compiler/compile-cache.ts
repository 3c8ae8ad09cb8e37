// The compile cache: a compiled module (fused graphs, memory plans, kernel IR) kept on disk, so that a start whose
// model, options and tsfuse sources have not changed skips tracing and compiling (entries, keys and the folder:
// compiler/compile-cache-entry.ts, which a warm start alone needs).

import { Module } from '../ir/graph.ts';
import { compileModule } from './compile-module.ts';
import { CacheOptions, CachedCompile, entryFor, readCompiled, writeEntry } from './compile-cache-entry.ts';
import { withoutOptimizingTier } from './optimizing-tier.ts';
import { defaultContext, PassContext } from './passes/context.ts';

export type { CacheOptions, CachedCompile } from './compile-cache-entry.ts';
export { cacheKey, compileCacheDir, compileCacheEnabled, findCompiled, sourcesHash, tsfuseVersion } from './compile-cache-entry.ts';

/**
 * The compiled module of `trace()` with the default passes, from the cache when it holds it (then nothing is traced),
 * else compiled and stored. `what` is JSON data naming everything that decides the traced module (a model's config
 * and trace options); tsfuse's sources and version, the pass context's sizes and the working directory are added.
 */
export function compileCached(what: unknown, trace: () => Module, opts: CacheOptions & { readonly ctx?: PassContext } = {}): CachedCompile {
  const ctx = opts.ctx ?? defaultContext;
  const entry = entryFor(what, { ...opts, ctx });
  const found = readCompiled(entry);
  if (found) return found;
  const compiled = withoutOptimizingTier(() => {
    const traced = trace();
    return { module: compileModule(traced, { ctx }), tracedNodes: Object.fromEntries(traced.graphs.map((g) => [g.name, g.nodes.length])) };
  });
  if (!entry) return { ...compiled, hit: false, key: '' };
  writeEntry(entry.file, entry.key, compiled);
  return { ...compiled, hit: false, key: entry.key };
}
