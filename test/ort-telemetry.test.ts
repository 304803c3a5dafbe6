// onnxruntime 1.29+ reports usage to Microsoft unless ORT_DISABLE_TELEMETRY=1 is in the process
// environment when it creates its environment (src/util/ort-telemetry.ts). Driven through real
// onnxruntime sessions in child processes, each with its own temp directory and home.
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
const scratch = mkdtempSync(join(tmpdir(), 'resrt-ort-telemetry-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Opens one session through resrt (the compiled dist/) in a child with this environment. */
function openSessionInChild(name: string, env: Record<string, string>): { tmp: string; home: string } {
  const dir = join(scratch, name);
  const tmp = join(dir, 'tmp');
  const home = join(dir, 'home');
  mkdirSync(tmp, { recursive: true });
  mkdirSync(home, { recursive: true });
  const dist = (p: string): string => pathToFileURL(join(root, 'dist', p)).href;
  const script = join(dir, 'open.mjs');
  writeFileSync(
    script,
    `import { OnnxPolicy } from '${dist('runtime/onnx-policy.js')}';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '${dist('runtime/onnx-export.js')}';
import { Rng } from '${dist('util/rng.js')}';
import { writeFileSync } from 'node:fs';
const file = ${JSON.stringify(join(dir, 'base.onnx'))};
writeFileSync(file, exportMlpToOnnx(randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [8], actionDim: 2, rng: new Rng(1), metadata: { [MetaKey.kind]: 'base' } })));
const policy = await OnnxPolicy.load(file);
await policy.close();
console.log('opened');
`,
  );
  const inherited = { ...process.env };
  // onnxruntime also stays quiet on its own on a CI runner (it looks for these variables, names
  // read from its library), which would hide whether the switch works; and XDG_CACHE_HOME would
  // move its cache out of the child's home. Each case here says what it wants instead.
  for (const name of [
    'ORT_DISABLE_TELEMETRY',
    'XDG_CACHE_HOME',
    'CI',
    'TF_BUILD',
    'GITHUB_ACTIONS',
    'GITLAB_CI',
    'CIRCLECI',
    'TRAVIS',
    'JENKINS_URL',
    'CODEBUILD_BUILD_ID',
    'BUILDKITE',
    'TEAMCITY_VERSION',
    'APPVEYOR',
    'BITBUCKET_BUILD_NUMBER',
  ])
    delete inherited[name];
  const r = spawnSync(process.execPath, [script], {
    env: { ...inherited, TMPDIR: tmp, HOME: home, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.stderr + r.stdout).toContain('opened');
  return { tmp, home };
}

const traces = (where: { tmp: string; home: string }): string[] => [
  ...readdirSync(where.tmp).filter((f) => f.startsWith('mat-debug-')),
  ...(existsSync(join(where.home, '.cache', 'Microsoft')) ? ['~/.cache/Microsoft'] : []),
];

describe("onnxruntime's telemetry", () => {
  it('is off in a process that opens a session through resrt: no temp log, no device id or event cache in the home', () => {
    const where = openSessionInChild('default', {});
    expect(traces(where)).toEqual([]);
  });

  it('stays on where the user set ORT_DISABLE_TELEMETRY=0 (and then leaves its traces, so the check above can fail)', () => {
    // Uploads go nowhere here: a proxy on a closed port and an empty CA bundle for its libcurl.
    const emptyBundle = join(scratch, 'empty-ca.pem');
    writeFileSync(emptyBundle, '');
    const where = openSessionInChild('opted-in', {
      ORT_DISABLE_TELEMETRY: '0',
      https_proxy: 'http://127.0.0.1:9',
      all_proxy: 'http://127.0.0.1:9',
      SSL_CERT_FILE: emptyBundle,
    });
    expect(traces(where).length).toBeGreaterThan(0);
  });

  it('is switched off by every module that loads onnxruntime or starts a worker, before it does', () => {
    const missing: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith('.ts') && !entry.name.endsWith('ort-telemetry.ts')) {
          const lines = readFileSync(path, 'utf8').split('\n');
          const loads = lines.findIndex(
            (l) =>
              (/from 'onnxruntime-node/.test(l) && !l.startsWith('import type')) ||
              /\('onnxruntime-node/.test(l) ||
              /new Worker\(/.test(l),
          );
          if (loads < 0) continue;
          const switchedOff = lines.findIndex((l) =>
            /^import '\.{1,2}\/(util\/)?ort-telemetry\.js';/.test(l),
          );
          if (switchedOff < 0 || switchedOff > loads) missing.push(relative(root, path));
        }
      }
    };
    walk(join(root, 'src'));
    expect(missing).toEqual([]);
  });
});
