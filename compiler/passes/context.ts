// What every pass may consult: sizes to assume for symbolic dims (for byte counts) and where to explain decisions.

export interface PassContext {
  /** Sizes assumed for symbolic dimensions when a pass weighs bytes (a prefill of S tokens). */
  readonly dims: ReadonlyMap<string, number>;
  /**
   * Receives a pass's explanations (fusion decisions and their reasons) and the graph each is about; absent means
   * nobody listens.
   */
  readonly explain?: (pass: string, line: string, graph: string) => void;
  /**
   * The KV-cache length from which attention is split into chunks (split-attention; default SPLIT_ATTENTION_AT);
   * Infinity: never (a device whose decode attention walks a long cache in one workgroup a head: compiler/session-choices.ts).
   */
  readonly splitAttentionFrom?: number;
  /**
   * Where a decode step's KV-cache writes (updates of one position) go, where not in a kernel of their own (fuse):
   *   attention        they join the attention kernel that reads the cache, which reads the new rows from the
   *                    update and stores them (CUDA's decode form)
   *   after-attention  attention computes the new rows from the update and reads the rest of the cache read-only;
   *                    the write joins the kernel that reads attention's result (WebGPU's decode form, whose reads
   *                    are slower from a buffer it also writes)
   * Either way a launch fewer a layer (compiler/session-choices.ts).
   */
  readonly cacheWrites?: 'attention' | 'after-attention';
}

export const defaultContext: PassContext = { dims: new Map([['S', 32]]) };
