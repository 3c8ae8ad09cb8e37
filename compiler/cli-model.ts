// `tsfuse logits` and `tsfuse trace`: one forward pass over a prompt, and the traced Llama graphs.

import { traceLlama } from '../examples/llama.ts';
import { printModule } from '../ir/printer.ts';
import { verifyModule } from '../ir/verify.ts';
import { loadLlama } from '../runtime/llama.ts';
import { showProgress, withWeightProgress } from '../runtime/progress.ts';
import { backendOption, checkBackend, checkModelDir, defineCommand, jsonOption, modelOption, parseIds, positiveInt } from './cli-args.ts';
import { openLlamaSession } from './open-session.ts';

export const logitsCommand = defineCommand({
  synopsis: '--model DIR --ids 5,9,13 [options]',
  about: 'Runs one forward pass over the ids with an empty cache and prints the logits at every position\n' +
    '(a summary per position, or --json: {"logits": [[...], ...]}, one vocab-sized row per id).',
  options: {
    model: modelOption,
    ids: { type: 'string', value: '5,9,13', help: 'the prompt as comma-separated token ids' },
    backend: backendOption,
    json: jsonOption,
  },
  async run(values) {
    const ids = parseIds(values.ids);
    const backend = checkBackend(values.backend);
    const { model, bar } = withWeightProgress(loadLlama(checkModelDir(values.model)), showProgress(values.json));
    const session = await openLlamaSession(model, { backend, cacheLength: ids.length });
    const logits = await session.logits(ids);
    bar.stop();
    session.close();
    const [rows, vocab] = logits.shape;
    const table = Array.from({ length: rows }, (_, r) => Array.from(logits.data.subarray(r * vocab, (r + 1) * vocab)));
    if (values.json) {
      console.log(JSON.stringify({ logits: table }));
      return;
    }
    table.forEach((row, i) => {
      // The argmax as the graphs choose it: the first NaN, else the first largest (README, Numerics).
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j] > row[best] || (Number.isNaN(row[j]) && !Number.isNaN(row[best]))) best = j;
      console.log(`position ${i} (token ${ids[i]}): argmax ${best} (${row[best].toFixed(4)}), first ${row.slice(0, 4).map((v) => v.toFixed(4)).join(' ')} ...`);
    });
  },
});

export const traceCommand = defineCommand({
  synopsis: '(--model DIR | --config NAME) [options]',
  about: 'Traces the Llama prefill and decode graphs and prints a line per graph, or with --dump-ir the graphs as IR\n' +
    'text (which `tsfuse inspect` and `tsfuse run` read back).',
  options: {
    model: modelOption,
    config: { type: 'string', value: 'NAME', help: 'a built-in config instead of a checkpoint (llama-3.2-1b, llama-tiny)' },
    'dump-ir': { type: 'string', value: '', help: 'print the traced graphs as IR text' },
    'cache-length': { type: 'string', value: 'N', help: 'KV-cache positions (default: the model\'s context, at most 2048)' },
  },
  async run(values) {
    const { builtinLlama } = await import('./cli-compile-command.ts');
    const { UsageError } = await import('./cli-args.ts');
    if ((values.model === undefined) === (values.config === undefined)) throw new UsageError('give one of --model DIR or --config NAME');
    const model = values.model !== undefined ? loadLlama(checkModelDir(values.model)) : undefined;
    const cfg = model?.cfg ?? builtinLlama(values.config!);
    const cacheLength = values['cache-length'] ? positiveInt(values['cache-length'], '--cache-length')
      : Math.min(cfg.maxPositionEmbeddings, 2048);
    const module = traceLlama(cfg, { weightDType: model?.weightDType ?? (await import('../ir/dtype.ts')).DType.BF16, cacheLength });
    verifyModule(module);
    if (values['dump-ir'] !== undefined) process.stdout.write(printModule(module));
    else for (const g of module.graphs) console.log(`@${g.name}: ${g.nodes.length} nodes, ${g.params.length} params, ${g.states.length} state tensors`);
  },
});
