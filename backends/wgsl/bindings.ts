// What each @binding of a rendered WGSL kernel is, and its type in a bind group layout: shared by the printer and
// the runtimes (the artifacts' one too, which imports nothing else of the printer).

/**
 * A chunk of a buffer, a whole buffer seen as vec4s, the sizes, or the workspace a kernel's two entry points share
 * (RenderedWgsl.merge).
 */
export type WgslBinding =
  | { readonly kind: 'chunk'; readonly buffer: number; readonly chunk: number }
  | { readonly kind: 'vec4'; readonly buffer: number }
  | { readonly kind: 'sizes' }
  | { readonly kind: 'workspace' };

/**
 * A binding's buffer type in its bind group layout (the shader's `var<storage, …>` access): GPUBufferBindingType's
 * values, spelled out so that the declarations need no WebGPU types where the optional packages are not installed.
 */
export function bindingType(b: WgslBinding, buffers: readonly { readonly written: boolean }[]): 'uniform' | 'storage' | 'read-only-storage' {
  if (b.kind === 'sizes') return 'uniform';
  if (b.kind === 'workspace') return 'storage';
  return b.kind === 'chunk' && buffers[b.buffer].written ? 'storage' : 'read-only-storage';
}
