/** Small pieces every CLI command uses: argument parsing with clear errors, progress bars, output. */
import cliProgress from 'cli-progress';
import { ResrtError } from '../util/errors.js';

export function parseIntArg(name: string, min = 1): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) {
      throw new ResrtError(
        `${name} must be an integer ≥ ${min}, got "${value}"`,
        `e.g. ${name} ${Math.max(min, 10)}`,
      );
    }
    return n;
  };
}

export function parseFloatArg(name: string, min = -Infinity, max = Infinity): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new ResrtError(
        `${name} must be a number in [${min}, ${max}], got "${value}"`,
        `e.g. ${name} ${Math.max(min, 0)}`,
      );
    }
    return n;
  };
}

export interface Progress {
  update(done: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

/** A progress bar on stderr (stdout stays clean for --json); silent when stderr is not a terminal. */
export function progressBar(label: string, total: number, fields = ''): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {value}/{total} eta {eta_formatted} ${fields}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    update(done, payload) {
      bar.update(done, payload);
    },
    stop() {
      bar.stop();
    },
  };
}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** Left-aligned text table. */
export function formatTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join(
    '\n',
  );
}

export function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}
