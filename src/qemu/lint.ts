// lint: the analysis reduced to a verdict and QEMU-style messages.
import { analyze } from './analyze.ts';
import type { Analysis, AnalyzeOptions, Diagnostic } from './analysis.ts';

export interface LintOutput {
  /** True when QEMU would start (no errors). */
  ok: boolean;
  errors: number;
  warnings: number;
  diagnostics: Diagnostic[];
  /** Set when the line asks QEMU for a model list (model=help) instead of starting. */
  help?: string;
}

export function lintAnalysis(a: Analysis): LintOutput {
  const errors = a.diagnostics.filter((d) => d.severity === 'error').length;
  const warnings = a.diagnostics.filter((d) => d.severity === 'warning').length;
  return { ok: errors === 0, errors, warnings, diagnostics: a.diagnostics, ...(a.help ? { help: a.help } : {}) };
}

export function lint(argv: string[], opts: AnalyzeOptions = {}): LintOutput {
  return lintAnalysis(analyze(argv, opts));
}

/** 'qemu: -netdev user,id=a,foo=1: Invalid parameter 'foo'' followed by an indented hint, as QEMU prints errors. */
export function formatDiagnostic(d: Diagnostic, prog = 'qnet'): string {
  const sev = d.severity === 'error' ? '' : `${d.severity}: `;
  const head = `${prog}: ${d.option ? `${d.option}: ` : ''}${sev}${d.message}`;
  return d.hint ? `${head}\n  hint: ${d.hint}` : head;
}
