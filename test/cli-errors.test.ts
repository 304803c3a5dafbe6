// Bad input, through the CLI's main(): every row must fail with a message that names the cause,
// and a fix whose commands, flags and files exist. To add a row, add to `badInputs` (and, when it
// needs a file, to `fixtures`).
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli.js';
import type { BatchResult } from './fixtures/cli-batch.js';

const run = promisify(execFile);

/** Paths the rows use; all under one temporary folder outside the repository. */
interface Fixtures {
  dir: string;
  base: string;
  demos: string;
  pushDemos: string;
}

interface BadInput {
  name: string;
  args: (f: Fixtures) => string[];
  /** The message (stderr) must name this cause. */
  cause: RegExp;
  /** The fix line must say this. */
  fix: RegExp;
  /** Advice that used to be given and is wrong. */
  notSaid?: RegExp;
  /** Commander's own errors have its format (with a suggestion) instead of `fix:`. */
  commander?: boolean;
  /** Further checks once it ran (e.g. nothing left behind). */
  after?: (f: Fixtures, r: BatchResult) => void;
}

const setup: ((f: Fixtures) => string[])[] = [
  (f) => ['collect', '--task', 'reach', '--episodes', '20', '--out', f.demos],
  (f) => ['collect', '--task', 'push', '--episodes', '2', '--out', f.pushDemos],
  (f) => ['bc', '--demos', f.demos, '--out', f.base, '--epochs', '2', '--hidden', '16,16'],
];

const badInputs: BadInput[] = [
  {
    name: 'a file that is not ONNX',
    args: (f) => ['inspect', join(f.dir, 'not-onnx.onnx')],
    cause: /not-onnx\.onnx is not an ONNX model/,
    fix: /`resrt bc` or `resrt train`/,
    notSaid: /resrt export/,
  },
  {
    name: 'a base given to infer as a residual',
    args: (f) => ['infer', f.base, '--residual', '--obs', JSON.stringify(new Array(12).fill(0))],
    cause: /base\.onnx: the file is a base policy \(resrt\.kind=base\), not a residual actor/,
    fix: /`resrt infer FILE` without --residual/,
    notSaid: /metadata is stale/,
  },
  {
    name: 'a base given to eval as the residual',
    args: (f) => ['eval', '--task', 'reach', '--base', f.base, '--residual', f.base, '--episodes', '1'],
    cause: /base\.onnx: the file is a base policy/,
    fix: /residual\.onnx that `resrt train` writes/,
    notSaid: /observation values but the task provides/,
  },
  {
    name: 'NaN in --obs',
    args: (f) => ['infer', f.base, '--obs', `[${new Array(9).fill(0).join(',')},NaN]`],
    cause: /--obs holds NaN or Infinity/,
    fix: /finite numbers only/,
    notSaid: /quote the array/,
  },
  {
    name: '--obs that is not JSON',
    args: (f) => ['infer', f.base, '--obs', '[0.1, 0.2'],
    cause: /--obs is not JSON/,
    fix: /JSON array of numbers, e\.g\. --obs '\[0\.1/,
  },
  {
    name: '--obs of the wrong length',
    args: (f) => ['infer', f.base, '--obs', '[0.1, 0.2]'],
    cause: /takes 10 values, got 2/,
    fix: /pass exactly 10/,
  },
  {
    name: 'collect --out into a missing folder',
    args: (f) => [
      'collect',
      '--task',
      'reach',
      '--episodes',
      '2',
      '--out',
      join(f.dir, 'no-such', 'x.jsonl'),
    ],
    cause: /--out .*x\.jsonl: the folder .*no-such does not exist/,
    fix: /mkdir -p .*no-such/,
    notSaid: /ENOENT/,
  },
  {
    name: 'bc --out into a missing folder',
    args: (f) => ['bc', '--demos', f.demos, '--out', join(f.dir, 'no-such', 'b.onnx')],
    cause: /the folder .*no-such does not exist/,
    fix: /mkdir -p/,
  },
  {
    name: 'eval --plot into a missing folder',
    args: () => ['eval', '--task', 'reach', '--episodes', '1', '--plot', '/no-such-folder/p.svg'],
    cause: /--plot .*: the folder \/no-such-folder does not exist/,
    fix: /mkdir -p \/no-such-folder/,
  },
  {
    name: 'eval --video into a missing folder',
    args: () => ['eval', '--task', 'reach', '--episodes', '1', '--video', '/no-such-folder/v.mp4'],
    cause: /--video .*: the folder \/no-such-folder does not exist/,
    fix: /mkdir -p \/no-such-folder/,
  },
  {
    name: 'eval --video on a robot',
    args: () => ['eval', '--task', 'reach', '--robot', 'mqtt://127.0.0.1:1/arm', '--video', 'v.mp4'],
    cause: /--video draws the simulator's cameras/,
    fix: /drop --video with --robot/,
  },
  {
    name: 'collect --depth on a state-only task',
    args: (f) => ['collect', '--task', 'reach', '--depth', '--out', join(f.dir, 'depth.jsonl')],
    cause: /task reach observes state only \(no cameras\)/,
    fix: /drop --depth, or collect on a task with cameras, e\.g\. --task push-cam/,
  },
  {
    name: 'infer --image that is not camera=file',
    args: (f) => ['infer', f.base, '--obs', JSON.stringify(new Array(10).fill(0)), '--image', 'frame.png'],
    cause: /--image frame\.png is not camera=file/,
    fix: /e\.g\. --image top=frame\.png/,
  },
  {
    name: 'infer --image of a missing file',
    args: (f) => [
      ...['infer', f.base, '--obs', JSON.stringify(new Array(10).fill(0))],
      ...['--image', `top=${join(f.dir, 'missing.png')}`],
    ],
    cause: /image file .*missing\.png does not exist/,
    fix: /check the path of --image/,
  },
  {
    name: 'learner --wal-limit that is not a number',
    args: (f) => ['learner', '--out', join(f.dir, 'wal-session'), '--wal-limit', 'lots'],
    cause: /--wal-limit must be a number ≥ 0\.001, got "lots"/,
    fix: /e\.g\. --wal-limit 65536/,
    after: (f) => expect(existsSync(join(f.dir, 'wal-session'))).toBe(false),
  },
  {
    name: '--scale that is not a number',
    args: (f) => ['run', '--task', 'reach', '--base', f.base, '--scale', 'abc'],
    cause: /--scale must be a number in \[0, 10\], got "abc"/,
    fix: /e\.g\. --scale 1$/m,
    notSaid: /--scale 0/,
  },
  {
    name: 'a negative --rate',
    args: (f) => ['run', '--task', 'reach', '--base', f.base, '--rate', '-5'],
    cause: /--rate must be a number in \[1, 10000\], got "-5"/,
    fix: /leave --rate out to run at the task's or robot's own rate/,
    notSaid: /--rate 1\b/,
  },
  {
    name: '--episodes 0',
    args: () => ['eval', '--task', 'reach', '--episodes', '0'],
    cause: /--episodes must be an integer ≥ 1, got "0"/,
    fix: /e\.g\. --episodes 100/,
  },
  {
    name: 'a safety config with a misspelt key and a bad value',
    args: (f) => ['run', '--task', 'reach', '--base', f.base, '--safety', join(f.dir, 'safety.json')],
    cause:
      /safety config .*safety\.json has 3 problems:[\s\S]*rate\.maxDelt: unknown key; did you mean "maxDelta"\?[\s\S]*guards\.obsDimm: unknown key; did you mean "obsDim"[\s\S]*teleop\.norm/,
    fix: /rename it to "maxDelta"[\s\S]*use one of "linf", "l2"[\s\S]*docs\/safety\.md/,
  },
  {
    name: 'a robot config with a misspelt key',
    args: (f) => [
      ...['eval', '--task', 'reach', '--robot', 'mqtt://127.0.0.1:1/arm'],
      ...['--robot-config', join(f.dir, 'robot.json')],
    ],
    cause: /robot config .*robot\.json is invalid:[\s\S]*transprt: unknown key; did you mean "transport"\?/,
    fix: /rename it to "transport"/,
    notSaid: /transport: is missing/,
  },
  {
    name: 'train --resume with nothing to resume',
    args: (f) => [
      'train',
      '--task',
      'reach',
      '--base',
      f.base,
      '--resume',
      '--out',
      join(f.dir, 'empty-run'),
    ],
    cause: /nothing to resume: .*empty-run holds no residual run/,
    fix: /drop --resume/,
  },
  {
    name: "train on another task's demonstrations",
    args: (f) => [
      ...['train', '--task', 'reach', '--base', f.base, '--demos', f.pushDemos],
      ...['--out', join(f.dir, 'wrong-run'), '--steps', '100', '--no-worker'],
    ],
    cause: /the demonstrations have obs\/action dims 16\/3 \(task push\) but the environment reach has 10\/2/,
    fix: /`resrt collect`, or pass the matching --demos file/,
    after: (f) => expect(existsSync(join(f.dir, 'wrong-run'))).toBe(false),
  },
  {
    name: 'learner --encoder that is not an encoder mode',
    args: (f) => ['learner', '--out', join(f.dir, 'encoder-session'), '--encoder', 'pixels'],
    cause: /--encoder pixels is not an encoder mode/,
    fix: /use one of: base-embedding, none/,
    after: (f) => expect(existsSync(join(f.dir, 'encoder-session'))).toBe(false),
  },
  {
    name: 'learner --resume with nothing to resume',
    args: (f) => ['learner', '--out', join(f.dir, 'empty-session'), '--resume'],
    cause: /nothing to resume: .*empty-session holds no session/,
    fix: /drop --resume/,
  },
  {
    name: "import session from a folder that is not a learner's",
    args: (f) => ['import', 'session', join(f.dir, 'empty-session'), '--out', join(f.dir, 'labelled.jsonl')],
    cause: /empty-session has no write-ahead log \(wal\/\)/,
    fix: /the folder the learner wrote/,
    after: (f) => expect(existsSync(join(f.dir, 'labelled.jsonl'))).toBe(false),
  },
  {
    name: 'a state encoder trained on demonstrations without environment state',
    args: (f) => [
      'encoder',
      'train',
      '--demos',
      f.pushDemos,
      '--targets',
      'goal_x,goal_y',
      '--out',
      join(f.dir, 'loc.onnx'),
    ],
    cause: /the demonstrations of push record no environment state/,
    fix: /`resrt collect --task push-cam --episodes 400 --out demos\.jsonl`/,
    after: (f) => expect(existsSync(join(f.dir, 'loc.onnx'))).toBe(false),
  },
  {
    name: 'a learner whose base is missing',
    args: (f) => ['learner', '--out', join(f.dir, 'new-session'), '--base', join(f.dir, 'missing.onnx')],
    cause: /policy file .*missing\.onnx does not exist/,
    fix: /check the path/,
    after: (f) => expect(existsSync(join(f.dir, 'new-session'))).toBe(false),
  },
  {
    name: 'an actor whose base is missing',
    args: (f) => [
      ...['actor', '--robot-id', 'arm', '--broker', 'mqtt://127.0.0.1:1', '--task', 'reach'],
      ...['--base', join(f.dir, 'missing.onnx'), '--state', join(f.dir, 'new-state')],
    ],
    cause: /policy file .*missing\.onnx does not exist/,
    fix: /check the path/,
    after: (f) => expect(existsSync(join(f.dir, 'new-state'))).toBe(false),
  },
  {
    name: 'an actor asked to send frames in an unknown form',
    args: (f) => [
      ...['actor', '--robot-id', 'arm', '--broker', 'mqtt://127.0.0.1:1', '--task', 'reach'],
      ...['--base', f.base, '--state', join(f.dir, 'frames-state'), '--send-frames', 'png'],
    ],
    cause: /--send-frames png/,
    fix: /use one of: features, jpeg, none/,
    after: (f) => expect(existsSync(join(f.dir, 'frames-state'))).toBe(false),
  },
  {
    name: 'a misspelt residual config key',
    args: (f) => [
      'train',
      '--task',
      'reach',
      '--base',
      f.base,
      '--set',
      'actorLR=3e-4',
      '--out',
      join(f.dir, 'set-run'),
    ],
    cause: /unknown residual config key 'actorLR' \(did you mean 'actorLr'\?\)/,
    fix: /known keys \(src\/residual\/config\.ts\)/,
    after: (f) => expect(existsSync(join(f.dir, 'set-run'))).toBe(false),
  },
  {
    name: 'an unknown --profile',
    args: (f) => ['train', '--task', 'reach', '--base', f.base, '--profile', 'fast'],
    cause: /--profile fast is not a profile/,
    fix: /--profile auto, --profile cpu or --profile gpu/,
  },
  {
    name: 'an unknown --keep',
    args: (f) => ['train', '--task', 'reach', '--base', f.base, '--keep', 'latest'],
    cause: /--keep must be final or best, got "latest"/,
    fix: /--keep best --eval-every 2500/,
  },
  {
    name: '--keep best without periodic evaluations',
    args: (f) => [
      'train',
      '--task',
      'reach',
      '--base',
      f.base,
      '--keep',
      'best',
      '--eval-every',
      '0',
      '--out',
      join(f.dir, 'keep-run'),
    ],
    cause: /needs periodic evaluations to choose among, and evalEvery is 0/,
    fix: /--eval-every N/,
    after: (f) => expect(existsSync(join(f.dir, 'keep-run'))).toBe(false),
  },
  {
    name: 'an unknown task name',
    args: () => ['eval', '--task', 'pusj'],
    cause: /unknown task "pusj"/,
    fix: /did you mean push\?/,
  },
  {
    name: 'a task path that does not exist',
    args: (f) => ['eval', '--task', join(f.dir, 'no-task-here/')],
    cause: /unknown task/,
    fix: /no file or directory at .*no-task-here/,
  },
  {
    name: 'a task module whose default export is nested (CommonJS)',
    args: (f) => ['eval', '--task', join(f.dir, 'nested-task'), '--episodes', '1'],
    cause: /the task is nested one level down \(default\.default\)/,
    fix: /rename it \.mts \(or \.mjs\), or set "type": "module"/,
    notSaid: /is missing or has invalid/,
  },
  {
    name: 'a task module that does not compile',
    args: (f) => ['eval', '--task', join(f.dir, 'syntax-task'), '--episodes', '1'],
    cause: /syntax-task\/task\.ts does not compile: .*task\.ts:2:\d+: ERROR: Expected/,
    fix: /fix the TypeScript syntax/,
  },
  {
    name: 'a task module missing fields',
    args: () => ['eval', '--task', 'test/fixtures/bad-task.ts'],
    cause: /is missing or has invalid: .*observe \(function\), success \(function\)/,
    fix: /docs\/tasks\.md/,
  },
  {
    name: 'a missing policy file',
    args: (f) => ['eval', '--task', 'reach', '--base', join(f.dir, 'missing.onnx')],
    cause: /policy file .*missing\.onnx does not exist/,
    fix: /check the path/,
  },
  {
    name: 'missing demonstrations',
    args: (f) => ['bc', '--demos', join(f.dir, 'missing.jsonl'), '--out', join(f.dir, 'b.onnx')],
    cause: /demonstration file .*missing\.jsonl does not exist/,
    fix: /`resrt collect --task T --out FILE`/,
  },
  {
    name: 'collect over an existing file',
    args: (f) => ['collect', '--task', 'reach', '--episodes', '1', '--out', f.demos],
    cause: /reach-demos\.jsonl already exists/,
    fix: /--overwrite/,
  },
  {
    name: 'an unknown --policy',
    args: () => ['eval', '--task', 'reach', '--policy', 'expret'],
    cause: /unknown --policy "expret"/,
    fix: /--policy expert/,
  },
  {
    name: '--residual without --base',
    args: (f) => ['eval', '--task', 'reach', '--residual', f.base],
    cause: /--residual needs --base/,
    fix: /base policy the residual was trained on/,
  },
  {
    name: 'virtual-robot without a transport',
    args: () => ['virtual-robot', '--task', 'reach'],
    cause: /choose one transport/,
    fix: /--serial, --mqtt URL or --embedded-broker/,
  },
  {
    name: 'a misspelt command',
    args: () => ['trian', '--task', 'reach'],
    cause: /unknown command 'trian'/,
    fix: /Did you mean train\?/,
    commander: true,
  },
];

/** Every `resrt CMD` a fix names is a command, every --flag an option there (or of the command run). */
function checkFixExists(program: Command, args: string[], fix: string): void {
  const commands = new Map(program.commands.map((c) => [c.name(), c]));
  const named = [...fix.matchAll(/`resrt ([a-z][a-z-]*)/g)].map((m) => m[1]);
  for (const name of named) expect(commands.has(name), `\`resrt ${name}\` in "${fix}"`).toBe(true);
  const where = [args[0], ...named].map((n) => commands.get(n)).filter((c): c is Command => !!c);
  const flags = new Set(['--help', '--version', ...where.flatMap((c) => c.options.map((o) => o.long ?? ''))]);
  for (const o of where.flatMap((c) => c.options)) if (o.negate) flags.add(o.long!.replace('--no-', '--'));
  for (const [flag] of fix.matchAll(/(?<![\w-])--[a-z][a-z-]*/g))
    expect(
      flags.has(flag),
      `${flag} in "${fix}" is not an option of ${[...where].map((c) => c.name())}`,
    ).toBe(true);
  for (const [file] of fix.matchAll(/\b(?:docs|src)\/[\w./-]+\.(?:md|ts)\b/g))
    expect(existsSync(file), `${file} named in "${fix}"`).toBe(true);
}

let fx: Fixtures;
let results: BatchResult[];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-cli-errors-'));
  fx = {
    dir,
    base: join(dir, 'base.onnx'),
    demos: join(dir, 'reach-demos.jsonl'),
    pushDemos: join(dir, 'push-demos.jsonl'),
  };
  writeFileSync(join(dir, 'not-onnx.onnx'), 'hello, not a model\n');
  writeFileSync(
    join(dir, 'safety.json'),
    JSON.stringify({ actionDim: 2, rate: { maxDelt: 0.1 }, teleop: { norm: 'l1' }, guards: { obsDimm: 10 } }),
  );
  writeFileSync(
    join(dir, 'robot.json'),
    JSON.stringify({
      name: 'arm',
      transprt: 'mqtt://127.0.0.1:1/arm',
      rateHz: 10,
      commandValidMs: 200,
      action: { dim: 1, names: ['j'], low: [-1], high: [1], safe: [0] },
      observation: [{ field: 'positions' }],
      episode: { maxSteps: 10, reset: 'manual', success: 'manual' },
    }),
  );
  mkdirSync(join(dir, 'empty-run'));
  mkdirSync(join(dir, 'empty-session'));
  // A package that says CommonJS: its task.ts arrives as { default: { default: task } }.
  mkdirSync(join(dir, 'nested-task'));
  writeFileSync(join(dir, 'nested-task', 'package.json'), '{ "type": "commonjs" }\n');
  writeFileSync(join(dir, 'nested-task', 'task.ts'), "export default { name: 'n', mjcf: '<mujoco/>' };\n");
  mkdirSync(join(dir, 'syntax-task'));
  writeFileSync(
    join(dir, 'syntax-task', 'task.ts'),
    "export default {\n  name: 'x' mjcf: '<mujoco/>',\n};\n",
  );

  const runs = [...setup.map((s) => s(fx)), ...badInputs.map((b) => b.args(fx))];
  const runsFile = join(dir, 'runs.json');
  writeFileSync(runsFile, JSON.stringify(runs));
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', 'test/fixtures/cli-batch.ts', runsFile],
    {
      maxBuffer: 1 << 26,
    },
  );
  const all = JSON.parse(stdout) as BatchResult[];
  for (const s of all.slice(0, setup.length)) expect(s.code, `${s.args.join(' ')}: ${s.stderr}`).toBe(0);
  results = all.slice(setup.length);
}, 180_000);

afterAll(() => rmSync(fx.dir, { recursive: true, force: true }));

describe('every bad input names its cause and a fix that exists', () => {
  const program = buildProgram();
  badInputs.forEach((b, i) => {
    it(b.name, () => {
      const r = results[i];
      const said = `${r.stderr}\n(exit ${r.code})`;
      expect(r.code, said).not.toBe(0);
      expect(r.stderr, said).not.toMatch(/\bat .*\.[jt]s:\d+/);
      expect(r.stderr).toMatch(b.cause);
      if (b.notSaid) expect(r.stderr).not.toMatch(b.notSaid);
      if (b.commander) {
        expect(r.stderr).toMatch(b.fix);
      } else {
        expect(r.stderr, said).toMatch(/\n {2}fix: /);
        // Problems listed one per line carry their own fixes ("; fix: ..."), before the last line's.
        const fixes = [...r.stderr.matchAll(/(?:^ {2}|; )fix: (.*)$/gm)].map((m) => m[1]);
        expect(fixes.join('\n')).toMatch(b.fix);
        for (const fix of fixes) checkFixExists(program, b.args(fx), fix);
      }
      b.after?.(fx, r);
    });
  });
});
