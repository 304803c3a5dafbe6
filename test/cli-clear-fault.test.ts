// The terminal prompt that stands between a latched e-stop/watchdog fault and its clearing.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { askToClear } from '../src/cli/robot-commands.js';

describe('askToClear', () => {
  it('tells the person what happened and clears only on a typed "clear"', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let text = '';
    output.on('data', (d: Buffer) => (text += d.toString()));
    let confirmed = 0;
    askToClear('the watchdog of arm latched: check the cell', () => confirmed++, input, output);
    const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
    await tick();
    expect(text).toContain('the watchdog of arm latched: check the cell.');
    expect(text).toContain('Type "clear" and press Enter');
    for (const answer of ['', 'y', 'yes', 'clr']) {
      input.write(`${answer}\n`);
      await tick();
      expect(confirmed, `after "${answer}"`).toBe(0);
    }
    input.write('  Clear \n');
    await tick();
    expect(confirmed).toBe(1);
  });
});
