// docs/tasks.md's example, copied verbatim out of the markdown into a folder outside the repository
// (task.ts and model.xml, nothing else), loads through the CLI run from that folder: the docs
// cannot drift from what works.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const repo = resolve('.');
const dir = mkdtempSync(join(tmpdir(), 'resrt-docs-task-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The fenced block of `lang` whose first line is `firstLine`, as written in the docs. */
function codeBlock(markdown: string, lang: string, firstLine: string): string {
  const start = markdown.indexOf(`\`\`\`${lang}\n${firstLine}\n`);
  expect(start, `docs/tasks.md has a \`\`\`${lang} block starting "${firstLine}"`).toBeGreaterThanOrEqual(0);
  const body = start + lang.length + 4;
  return markdown.slice(body, markdown.indexOf('```', body));
}

/** The CLI from source, started in `cwd` (outside the repository, as a user's shell would be). */
async function resrt(cwd: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  const tsx = pathToFileURL(join(repo, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
  return run(process.execPath, ['--import', tsx, join(repo, 'test', 'fixtures', 'cli-entry.ts'), ...args], {
    cwd,
    maxBuffer: 1 << 24,
  });
}

describe('the task example of docs/tasks.md', () => {
  it('loads from a bare folder outside the repository through the CLI, with its expert succeeding', async () => {
    const docs = readFileSync('docs/tasks.md', 'utf8');
    const taskDir = join(dir, 'my-task');
    mkdirSync(taskDir);
    writeFileSync(join(taskDir, 'task.ts'), codeBlock(docs, 'ts', '// my-task/task.ts'));
    writeFileSync(join(taskDir, 'model.xml'), codeBlock(docs, 'xml', '<!-- my-task/model.xml -->'));
    // Nothing resolves 'resrt/task' from there but resrt itself: no package.json, no node_modules.
    for (let d = dir; d !== '/'; d = resolve(d, '..')) {
      expect(existsSync(join(d, 'package.json')), `${d}/package.json`).toBe(false);
      expect(existsSync(join(d, 'node_modules')), `${d}/node_modules`).toBe(false);
    }

    // The two commands the docs open with, as written there.
    const ev = await resrt(
      dir,
      'eval',
      '--task',
      './my-task/',
      '--policy',
      'expert',
      '--plot',
      'my-task.svg',
      '--json',
    );
    const r = JSON.parse(ev.stdout) as { task: string; episodes: number; success_rate: number };
    expect(r.task).toBe('slider');
    expect(r.episodes).toBe(100);
    // The scripted expert is clean here; the docs' task must be solvable by it.
    expect(r.success_rate).toBeGreaterThanOrEqual(0.95);
    // trace() and markers() drew the cart's path and the goal.
    const svg = readFileSync(join(dir, 'my-task.svg'), 'utf8');
    expect(svg).toMatch(/^<svg[\s\S]*<circle [\s\S]*<path d="M/);

    await resrt(dir, 'collect', '--task', './my-task/task.ts', '--episodes', '10', '--out', 'demos.jsonl');
    const header = JSON.parse(readFileSync(join(dir, 'demos.jsonl'), 'utf8').split('\n')[0]) as {
      task: string;
      obsNames: string[];
    };
    expect(header).toMatchObject({ task: 'slider', obsNames: ['x', 'x_vel', 'goal'] });
  }, 120_000);
});
