// Where a printed CUDA function's shared memory lives. A kernel declares it: `__shared__` arrays and scalars, and
// the launch's dynamic shared memory as an extern array. A megakernel's task (./megakernel.ts) takes slices of one
// pool of dynamic shared memory that every task reuses instead (a device function's static __shared__ arrays would
// each take their own): the dynamic region first, then each array and scalar 16-byte aligned, in the order declared.

const elementBytes = { 'unsigned long long': 8, float: 4, int: 4, 'unsigned short': 2, bool: 1 } as const;

/** Element types of shared arrays. */
export type SharedType = keyof typeof elementBytes;

export interface SharedArrayOptions {
  /** A kernel aligns it to 16 bytes, so the compiler may read neighbours with one wide load (a task's slices are). */
  readonly aligned?: boolean;
  /** The count as a kernel prints it (an expression of the prelude's macros), where not the number. */
  readonly printedCount?: string;
}

/** The declarations of one printed function's shared memory: each method returns its line, unindented. */
export class SharedMemory {
  private used: number;

  private constructor(private readonly task: boolean, dynamicBytes: number) {
    this.used = align16(dynamicBytes);
  }

  /** A kernel's own shared memory. */
  static kernel(): SharedMemory {
    return new SharedMemory(false, 0);
  }

  /** A task's slices of the pool, after the `dynamicBytes` its kernel's launch would have given. */
  static task(dynamicBytes: number): SharedMemory {
    return new SharedMemory(true, dynamicBytes);
  }

  /** Bytes of the pool a task's declarations take so far. */
  get poolBytes(): number {
    return this.used;
  }

  array(type: SharedType, name: string, count: number, opts: SharedArrayOptions = {}): string {
    if (!this.task) return `__shared__ ${opts.aligned ? '__align__(16) ' : ''}${type} ${name}[${opts.printedCount ?? count}];`;
    return `${type}* const ${name} = reinterpret_cast<${type}*>(tf_pool + ${this.take(elementBytes[type] * count)});`;
  }

  scalar(type: SharedType, name: string): string {
    if (!this.task) return `__shared__ ${type} ${name};`;
    return `${type}& ${name} = *reinterpret_cast<${type}*>(tf_pool + ${this.take(elementBytes[type])});`;
  }

  /** The bytes the launch gives (a task: the start of the pool). */
  dynamic(name: string): string {
    return this.task ? `unsigned char* const ${name} = tf_pool;` : `extern __shared__ __align__(16) unsigned char ${name}[];`;
  }

  /** The offset of `bytes` more of the pool. */
  private take(bytes: number): number {
    const at = this.used;
    this.used += align16(bytes);
    return at;
  }
}

const align16 = (bytes: number) => Math.ceil(bytes / 16) * 16;
