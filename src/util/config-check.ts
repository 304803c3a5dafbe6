/**
 * Strict checking of the JSON config files users write (safety, robot): every problem at once,
 * each with its field path, and an unknown key named beside the known key it most likely meant.
 */
import type { z } from 'zod';

/** One problem in a config file: where, what, and how to fix it. */
export interface ConfigProblem {
  path: string;
  problem: string;
  fix: string;
}

/** Optimal-string-alignment edit distance (a swap of two neighbours counts as one edit). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [
    i,
    ...new Array<number>(b.length).fill(0),
  ]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The candidate closest to `word` (case-insensitive), if it is close enough to be a slip: at most
 * a third of the word's length in edits (and at least one), or a prefix of it.
 */
export function nearestName(word: string, candidates: readonly string[]): string | null {
  const w = word.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const lc = c.toLowerCase();
    const dist =
      lc.startsWith(w) || w.startsWith(lc) ? Math.min(1, editDistance(w, lc)) : editDistance(w, lc);
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  const limit = Math.max(1, Math.floor(word.length / 3));
  return best !== null && bestDistance <= limit ? best : null;
}

type AnySchema = z.core.$ZodType;

function def(schema: AnySchema): Record<string, unknown> & { type: string } {
  return (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
}

/** The keys an object at `path` of `schema` may have (the union of a union's options), or []. */
export function keysAt(schema: AnySchema, path: readonly PropertyKey[]): string[] {
  const d = def(schema);
  switch (d.type) {
    case 'optional':
    case 'default':
    case 'nullable':
    case 'prefault':
    case 'readonly':
      return keysAt(d.innerType as AnySchema, path);
    case 'pipe':
      return [...new Set([...keysAt(d.in as AnySchema, path), ...keysAt(d.out as AnySchema, path)])];
    case 'union':
      return [...new Set((d.options as AnySchema[]).flatMap((o) => keysAt(o, path)))];
    case 'array':
      return path.length && typeof path[0] === 'number' ? keysAt(d.element as AnySchema, path.slice(1)) : [];
    case 'record':
      return path.length ? keysAt(d.valueType as AnySchema, path.slice(1)) : [];
    case 'object': {
      const shape = d.shape as Record<string, AnySchema>;
      if (path.length === 0) return Object.keys(shape);
      const child = shape[String(path[0])];
      return child ? keysAt(child, path.slice(1)) : [];
    }
    default:
      return [];
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

/**
 * Every issue of a failed parse as a problem. An unknown key is named with the known key nearest
 * to it; the "missing" report of the key it was meant to be is then left out, being the same slip.
 * `fixFor` gives the fix of any other issue.
 */
export function configProblems(
  schema: AnySchema,
  issues: readonly z.core.$ZodIssue[],
  fixFor: (issue: z.core.$ZodIssue) => { problem: string; fix: string },
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const meant = new Set<string>();
  for (const issue of issues) {
    if (issue.code !== 'unrecognized_keys') continue;
    const known = keysAt(schema, issue.path);
    for (const key of issue.keys) {
      const near = nearestName(key, known);
      if (near) meant.add(formatPath([...issue.path, near]));
      problems.push({
        path: formatPath([...issue.path, key]),
        problem: near ? `unknown key; did you mean "${near}"?` : 'unknown key',
        fix: near
          ? `rename it to "${near}"`
          : `remove it; the keys allowed here are ${known.map((k) => `"${k}"`).join(', ') || 'none'}`,
      });
    }
  }
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') continue;
    const path = formatPath(issue.path);
    if (meant.has(path) && issue.input === undefined) continue;
    problems.push({ path, ...fixFor(issue) });
  }
  return problems;
}
