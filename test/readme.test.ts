// The README's install line is the one list of system packages (scripts/system-packages.txt), and
// the script that npm test runs first reads that list.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

describe('README and scripts/system-packages.txt', () => {
  it('name the same system packages', () => {
    const listed = execFileSync(process.execPath, ['scripts/system-packages.mjs', '--list'], {
      encoding: 'utf8',
    });
    const readme = readFileSync('README.md', 'utf8');
    const line = /apt-get install -y --no-install-recommends ([^\n`]+)/.exec(readme)?.[1];
    expect(line, 'README.md shows the apt-get install line').toBeDefined();
    expect(line!.trim().split(/\s+/)).toEqual(listed.trim().split(/\s+/));
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.pretest).toMatch(/node scripts\/system-packages\.mjs/);
    expect(readFileSync('.ci/run', 'utf8')).toMatch(/node scripts\/system-packages\.mjs/);
  });
});
