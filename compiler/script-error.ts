// The error of a model script that cannot be compiled (no entry point, data-dependent control flow), naming the
// script's file and line; kept apart from compiler/script.ts so the CLI can know it without loading ts-morph.

export class ScriptError extends Error {}
