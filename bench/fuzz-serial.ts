/**
 * Long fuzz runs of the C firmware's decoder and bridge (not part of CI: minutes of CPU, and clang).
 *  1. `make fuzz-long`: random and mutated frames under ASan/UBSan, every delimited run judged
 *     against an independent CRC/COBS reference (firmware-bridge/test/fuzz_decoder.c)
 *  2. `make fuzz-libfuzzer`: coverage-guided libFuzzer from the committed corpus
 *     (firmware-bridge/test/fuzz_target.c, firmware-bridge/test/fuzz-corpus)
 *  3. `make fuzz-corpus-merge`: the committed corpus and the run's new inputs minimised back into
 *     firmware-bridge/test/fuzz-corpus (commit it afterwards)
 *  4. `make fuzz-coverage`: that corpus replayed with clang source coverage; line and branch
 *     coverage of src/resrt_proto.c (the decoder and codec) and src/bridge.c
 *
 * usage: flock /work/coord/cpu.lock npx tsx bench/fuzz-serial.ts [--json] [--frames N] [--seconds S]
 *   (defaults 10 000 000 frames, 600 s); needs `apt-get install clang llvm`.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { firmwareDir } from '../src/hw/serial/host-firmware.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const json = process.argv.includes('--json');
const frames = Number(arg('--frames') ?? 10_000_000);
const seconds = Number(arg('--seconds') ?? 600);
if (!(Number.isInteger(frames) && frames > 0 && seconds > 0)) {
  process.stderr.write('fuzz-serial bench: --frames a positive integer, --seconds > 0\n');
  process.exit(2);
}
const dir = firmwareDir();

/** Runs a make target; returns stdout + stderr (libFuzzer reports on stderr) and the wall time. */
function make(target: string, vars: Record<string, string | number> = {}): { out: string; seconds: number } {
  const t0 = performance.now();
  const args = [
    '-C',
    dir,
    '--no-print-directory',
    target,
    ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
  ];
  const r = spawnSync('make', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 28,
    encoding: 'utf8',
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) {
    process.stderr.write(`${out.slice(-4000)}\n`);
    throw new Error(
      `make ${target} failed (${r.error?.message ?? `exit ${r.status}`}); for the clang targets: apt-get install clang llvm`,
    );
  }
  return { out, seconds: (performance.now() - t0) / 1000 };
}

function num(re: RegExp, text: string, what: string): number {
  const m = re.exec(text);
  if (!m) throw new Error(`could not find ${what} in:\n${text.slice(-2000)}`);
  return Number(m[1]);
}

// 1. the sanitized decoder fuzz
const long = make('fuzz-long', { FUZZ_LONG_FRAMES: frames });
const decoder = {
  frames: num(/fuzz: (\d+) frames/, long.out, 'the frame count'),
  accepted: num(/(\d+) accepted/, long.out, 'accepted frames'),
  rejected: num(/(\d+) rejected,/, long.out, 'rejected runs'),
  crcErrors: num(/(\d+) crc errors/, long.out, 'CRC errors'),
  commandsApplied: num(/applied (\d+)/, long.out, 'applied commands'),
  seconds: long.seconds,
};

// 2. coverage-guided (libFuzzer prints its stats on stderr, which make passes through)
const corpusDir = join(dir, 'test', 'fuzz-corpus');
const corpusBefore = readdirSync(corpusDir).length;
const lib = make('fuzz-libfuzzer', { FUZZ_SECONDS: seconds });
const libfuzzer = {
  seconds: lib.seconds,
  executions: num(/stat::number_of_executed_units:\s+(\d+)/, lib.out, 'executed units'),
  execsPerSecond: num(/stat::average_exec_per_sec:\s+(\d+)/, lib.out, 'exec/s'),
  newUnits: num(/stat::new_units_added:\s+(\d+)/, lib.out, 'new units'),
  peakRssMb: num(/stat::peak_rss_mb:\s+(\d+)/, lib.out, 'peak RSS'),
  committedCorpusFiles: corpusBefore,
};

// 3. minimise the corpus back into the repository, 4. its coverage
make('fuzz-corpus-merge');
const cov = make('fuzz-coverage');
function coverageRow(file: string): { lines: number; branches: number; regions: number; functions: number } {
  // llvm-cov report columns: Regions Missed Cover Functions Missed Executed Lines Missed Cover Branches Missed Cover
  const row = new RegExp(`^\\S*${file.replace('.', '\\.')}\\s+\\d`);
  const line = cov.out.split('\n').find((l) => row.test(l.trim()));
  if (!line) throw new Error(`no coverage row for ${file} in:\n${cov.out}`);
  const pct = [...line.matchAll(/([\d.]+)%/g)].map((m) => Number(m[1]));
  if (pct.length < 4) throw new Error(`unexpected llvm-cov row: ${line}`);
  return { regions: pct[0], functions: pct[1], lines: pct[2], branches: pct[3] };
}
const corpusBytes = readdirSync(corpusDir).reduce((n, f) => n + statSync(join(corpusDir, f)).size, 0);
const coverage = {
  corpusFiles: readdirSync(corpusDir).length,
  corpusBytes,
  'resrt_proto.c': coverageRow('resrt_proto.c'),
  'bridge.c': coverageRow('bridge.c'),
};

const summary = { bench: 'fuzz-serial', decoder, libfuzzer, coverage };
if (json) {
  process.stdout.write(JSON.stringify(summary) + '\n');
} else {
  const f = (v: number, d = 1): string => v.toFixed(d);
  console.log('fuzz-serial: the C firmware decoder and bridge');
  console.log(
    `ASan/UBSan random+mutated: ${decoder.frames} frames in ${f(decoder.seconds)} s ` +
      `(${f(decoder.frames / decoder.seconds, 0)} frames/s): ${decoder.accepted} accepted, ${decoder.rejected} runs rejected, ` +
      `${decoder.crcErrors} CRC errors, ${decoder.commandsApplied} commands applied, no disagreement with the reference`,
  );
  console.log(
    `libFuzzer: ${libfuzzer.executions} inputs in ${f(libfuzzer.seconds)} s (${libfuzzer.execsPerSecond}/s), ` +
      `${libfuzzer.newUnits} new units from ${libfuzzer.committedCorpusFiles} committed, peak RSS ${libfuzzer.peakRssMb} MB, no crash`,
  );
  console.log(
    `coverage of the committed corpus (${coverage.corpusFiles} files, ${coverage.corpusBytes} bytes):`,
  );
  console.log('file          | lines % | branches % | regions % | functions %');
  for (const name of ['resrt_proto.c', 'bridge.c'] as const) {
    const c = coverage[name];
    console.log(
      `${name.padEnd(13)} | ${f(c.lines).padStart(7)} | ${f(c.branches).padStart(10)} | ${f(c.regions).padStart(9)} | ${f(c.functions).padStart(11)}`,
    );
  }
}
