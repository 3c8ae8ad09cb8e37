// Text in and out of a checkpoint that ships a tokenizer.json: Hugging Face's own tokenizers library (pure JS, no
// network: the files are read from the checkpoint folder), and the incremental decoding that streams text as
// tokens arrive without splitting a multi-byte character.

import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

export class TokenizerError extends Error {}

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

/** The checkpoint's tokenizer (tokenizer.json, and tokenizer_config.json when present); undefined without one. */
export function loadTokenizer(dir: string): TextTokenizer | undefined {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) return undefined;
  const read = (f: string): object => {
    try {
      return JSON.parse(fs.readFileSync(f, 'utf8')) as object;
    } catch (e) {
      throw new TokenizerError(`${f}: ${(e as Error).message}`);
    }
  };
  const configFile = path.join(dir, 'tokenizer_config.json');
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(read(file), fs.existsSync(configFile) ? read(configFile) : {});
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    throw new TokenizerError(`${file}: not a tokenizer this library reads (${(e as Error).message})`);
  }
  return {
    encode: (text) => {
      const ids: (number | undefined)[] = tok.encode(text).ids;
      const bad = ids.findIndex((id) => id === undefined);
      if (bad >= 0) throw new TokenizerError(`${file}: no token for part ${bad} of the prompt`);
      return ids as number[];
    },
    decode: (ids) => tok.decode([...ids], { skip_special_tokens: true }),
  };
}

/** Decodes tokens as they come: push() returns the text that is complete so far and not yet returned. */
export class TextStream {
  private readonly ids: number[] = [];
  private shown = 0;

  constructor(private readonly tok: TextTokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.tok.decode(this.ids);
    // A character whose bytes are split across tokens decodes as U+FFFD until its last byte arrives.
    if (text.endsWith('\uFFFD')) return '';
    const fresh = text.slice(this.shown);
    this.shown = text.length;
    return fresh;
  }

  /** Everything decoded so far. */
  get text(): string {
    return this.ids.length ? this.tok.decode(this.ids) : ''; // the library refuses an empty list
  }
}
