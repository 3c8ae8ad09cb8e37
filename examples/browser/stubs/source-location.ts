// The browser's compiler/source-location.ts: no source maps to map stack frames through, so traced nodes carry no
// model-code line (dumps in Node show them).
export function callerLocation(): string | undefined {
  return undefined;
}
export function displayPath(file: string): string {
  return file;
}
