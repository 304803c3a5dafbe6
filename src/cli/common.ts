/** Small pieces every CLI command uses: argument parsing with clear errors, progress bars, output. */
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { ResrtError } from '../util/errors.js';
import { ENCODER_MODES, type EncoderMode, type ResidualConfig } from '../residual/config.js';

/**
 * Commander parsers that reject bad numbers with the fix. The fix's example is the option's default
 * (commander passes it as `previous`), else `example`: never a value that means something else.
 */
export function parseIntArg(
  name: string,
  min = 1,
  example?: number,
): (value: string, previous?: number) => number {
  return (value, previous) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) {
      const eg = previous ?? example ?? Math.max(min, 10);
      throw new ResrtError(`${name} must be an integer ≥ ${min}, got "${value}"`, `e.g. ${name} ${eg}`);
    }
    return n;
  };
}

/** As parseIntArg for real numbers in [min, max]; `example` may be a whole hint instead of a value. */
export function parseFloatArg(
  name: string,
  min: number,
  max: number,
  example?: number | string,
): (value: string, previous?: number) => number {
  return (value, previous) => {
    const n = value.trim() === '' ? NaN : Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      const range = max === Infinity ? `≥ ${min}` : `in [${min}, ${max}]`;
      const eg = previous ?? example ?? min;
      throw new ResrtError(
        `${name} must be a number ${range}, got "${value}"`,
        typeof eg === 'string' ? eg : `e.g. ${name} ${eg}`,
      );
    }
    return n;
  };
}

/** Fails before any work when a file cannot be written where asked: its folder must exist. */
export function checkOutputFile(path: string, flag: string): void {
  const dir = dirname(resolve(path));
  if (!existsSync(dir))
    throw new ResrtError(
      `${flag} ${path}: the folder ${dir} does not exist`,
      `create it first (mkdir -p ${shellQuote(dir)}), or choose another ${flag}`,
    );
  if (!statSync(dir).isDirectory())
    throw new ResrtError(`${flag} ${path}: ${dir} is a file, not a folder`, `choose another ${flag}`);
  if (existsSync(path) && statSync(path).isDirectory())
    throw new ResrtError(
      `${flag} ${path} is a folder`,
      `give a file path, e.g. ${flag} ${join(path, 'out')}`,
    );
}

/**
 * Runs `work`, which writes into `dir`; if it fails and `dir` did not exist before, the half-made
 * folder goes, unless `keep(dir)` says it already holds something worth keeping (a checkpoint).
 */
export async function inOutputFolder<T>(
  dir: string,
  work: () => Promise<T>,
  keep: (dir: string) => boolean = () => false,
): Promise<T> {
  const created = !existsSync(dir);
  try {
    return await work();
  } catch (err) {
    if (created && existsSync(dir) && !keep(dir)) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A word as a POSIX shell reads it back unchanged (for commands we print to be pasted). */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

const profileNames = ['auto', 'cpu', 'gpu'];

/** --profile of train and learner: auto, or a profile of src/residual/config.ts. */
export function checkProfile(profile: string): void {
  if (!profileNames.includes(profile))
    throw new ResrtError(
      `--profile ${profile} is not a profile`,
      'use --profile auto, --profile cpu or --profile gpu (docs/learner.md)',
    );
}

/** `--keep` of train and bench/learn: which residual the run writes. */
export function parseKeep(value: string): 'final' | 'best' {
  if (value !== 'final' && value !== 'best')
    throw new ResrtError(
      `--keep must be final or best, got "${value}"`,
      'e.g. --keep best --eval-every 2500',
    );
  return value;
}

/** --encoder of train and learner: the residual config's encoder mode; absent: the profile's. */
/**
 * `--encoder` (and `--encoder-file`) as config. `allowed` is what the command can serve: a learner
 * session computes camera features from the base's embedding only, so it refuses the other modes
 * instead of quietly learning from the state alone.
 */
export function encoderFlag(
  mode: string | undefined,
  file?: string,
  allowed: readonly EncoderMode[] = ENCODER_MODES,
): Partial<ResidualConfig> {
  if (mode === undefined && file === undefined) return {};
  if (mode !== undefined && !(allowed as readonly string[]).includes(mode)) {
    const known = (ENCODER_MODES as readonly string[]).includes(mode);
    throw new ResrtError(
      known ? `--encoder ${mode} is not served by this command` : `--encoder ${mode} is not an encoder mode`,
      known
        ? `use one of: ${allowed.join(', ')} (resrt train takes every mode: ${ENCODER_MODES.join(', ')})`
        : `use one of: ${allowed.join(', ')}`,
    );
  }
  if (file !== undefined && mode !== 'file') {
    throw new ResrtError(
      `--encoder-file ${file} is read only with --encoder file${mode ? ` (this run has --encoder ${mode})` : ''}`,
      `pass --encoder file --encoder-file ${file}, or drop --encoder-file`,
    );
  }
  if (mode === 'file' && file === undefined) {
    throw new ResrtError(
      '--encoder file needs the encoder ONNX',
      'pass --encoder-file ENCODER.onnx (one observation.images.<camera> input per camera, features [batch, E] out)',
    );
  }
  return { encoder: mode as EncoderMode, ...(file !== undefined ? { encoderFile: file } : {}) };
}

export interface Progress {
  /** `mark` says something happened worth a line of its own (an evaluation) where there is no bar. */
  update(done: number, payload?: Record<string, string | number>, mark?: boolean): void;
  stop(): void;
}

export interface ProgressOptions {
  /** Default process.stderr (stdout stays clean for --json). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Without a terminal: the longest silence between two plain lines. Default 30 s. */
  intervalMs?: number;
}

/**
 * Progress of a long command on stderr: a bar on a terminal; elsewhere (a log file, nohup, CI) a
 * plain line at the start, at least every 30 s, at every `mark` and at the end. `fields` is a
 * template such as 'success {success}'; a field not yet known shows as '-'.
 */
export function progressBar(
  label: string,
  total: number,
  fields = '',
  options: ProgressOptions = {},
): Progress {
  const stream = options.stream ?? process.stderr;
  const initial = Object.fromEntries([...fields.matchAll(/\{(\w+)\}/g)].map((m) => [m[1], '-']));
  if (!stream.isTTY)
    return plainProgress(stream, label, total, fields, initial, options.intervalMs ?? 30_000);
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {value}/{total} eta {eta_formatted} ${fields}`,
      stream,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, initial);
  return {
    update(done, payload) {
      bar.update(done, payload);
    },
    stop() {
      bar.stop();
    },
  };
}

function plainProgress(
  stream: NodeJS.WritableStream,
  label: string,
  total: number,
  fields: string,
  initial: Record<string, string | number>,
  intervalMs: number,
): Progress {
  const started = performance.now();
  let done = 0;
  const values: Record<string, string | number> = { ...initial };
  let last = '';
  const line = (repeat = true): void => {
    const text = fields.replace(/\{(\w+)\}/g, (_, k: string) => String(values[k] ?? '-'));
    const pctDone = total > 0 ? ` (${((100 * done) / total).toFixed(0)}%)` : '';
    const state = `${label}: ${done}/${total}${pctDone}${text ? ` ${text}` : ''}`;
    if (!repeat && state === last) return;
    last = state;
    stream.write(`${state}, ${clock(performance.now() - started)} elapsed\n`);
  };
  line();
  // The timer's line says "still running" even when nothing moved.
  const timer = setInterval(() => line(), intervalMs);
  timer.unref();
  let stopped = false;
  return {
    update(n, payload, mark) {
      done = n;
      Object.assign(values, payload);
      if (mark) line();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      line(false);
    },
  };
}

function clock(ms: number): string {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
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

/** A flag of comma-separated positive integers (layer widths, conv channels). */
export function positiveList(text: string, flag: string, example: string): number[] {
  const values = text.split(',').map((w) => Number(w));
  if (values.some((w) => !Number.isInteger(w) || w <= 0)) {
    throw new ResrtError(
      `${flag} must be comma-separated positive integers, got "${text}"`,
      `e.g. ${flag} ${example}`,
    );
  }
  return values;
}

/** `--set key=value` pairs as residual config overrides (values JSON or a bare word). */
export function parseOverrides(pairs: string[]): Partial<ResidualConfig> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new ResrtError(`--set ${pair} is not key=value`, 'e.g. --set actorLr=3e-4');
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      // A bare word is a string value (e.g. --set criticInput=residual); the config check names bad ones.
      if (!/^[A-Za-z][\w-]*$/.test(raw)) {
        throw new ResrtError(
          `--set ${key}: ${raw} is not a number, boolean, word or JSON array`,
          'e.g. --set criticHidden=[128,128] or --set criticInput=residual',
        );
      }
      value = raw;
    }
    out[key] = value;
  }
  return out as Partial<ResidualConfig>;
}
