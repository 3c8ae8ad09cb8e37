// What every pass may consult: sizes to assume for symbolic dims (for byte counts) and where to explain decisions.

export interface PassContext {
  /** Sizes assumed for symbolic dimensions when a pass weighs bytes (a prefill of S tokens). */
  readonly dims: ReadonlyMap<string, number>;
  /** Receives a pass's explanations (fusion decisions and their reasons); absent means nobody listens. */
  readonly explain?: (pass: string, line: string) => void;
  /**
   * The KV-cache length from which attention is split into chunks (split-attention; default SPLIT_ATTENTION_AT);
   * Infinity: never (a device whose decode attention walks a long cache in one workgroup a head: compiler/session-choices.ts).
   */
  readonly splitAttentionFrom?: number;
  /**
   * A decode step's KV-cache writes (updates of one position) join the attention kernel that reads the cache: it
   * reads the new rows from the update itself and stores them, one launch fewer a layer (fuse). Only where that
   * kernel's form reads them so (CUDA's decode form: compiler/session-choices.ts).
   */
  readonly cacheWritesInAttention?: boolean;
}

export const defaultContext: PassContext = { dims: new Map([['S', 32]]) };
