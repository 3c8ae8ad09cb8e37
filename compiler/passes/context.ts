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
}

export const defaultContext: PassContext = { dims: new Map([['S', 32]]) };
