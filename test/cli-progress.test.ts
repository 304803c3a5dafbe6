// Progress without a terminal (a log file, nohup, CI): plain lines at the start, at least every
// interval, at every marked event and at the end; never a template field left unfilled.
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { progressBar } from '../src/cli/common.js';

function capture(): { stream: Writable & { isTTY?: boolean }; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

afterEach(() => vi.useRealTimers());

describe('progressBar without a terminal', () => {
  it('prints at start, on each interval even when nothing moved, at each mark, and once at the end', () => {
    vi.useFakeTimers();
    const { stream, lines } = capture();
    const bar = progressBar('train', 1000, '{phase} eval {evalSuccess}', { stream, intervalMs: 30_000 });
    expect(lines).toEqual(['train: 0/1000 (0%) - eval -, 0:00 elapsed']);
    bar.update(100, { phase: 'training' });
    expect(lines).toHaveLength(1); // an update alone is not a line
    vi.advanceTimersByTime(30_000);
    expect(lines[1]).toMatch(/^train: 100\/1000 \(10%\) training eval -, /);
    vi.advanceTimersByTime(30_000);
    expect(lines[2]).toMatch(/^train: 100\/1000 \(10%\) training eval -, /); // still alive
    bar.update(500, { phase: 'training', evalSuccess: '80.0%' }, true);
    expect(lines[3]).toMatch(/^train: 500\/1000 \(50%\) training eval 80\.0%, /);
    bar.update(1000, { phase: 'done' }, true);
    bar.stop();
    bar.stop();
    // The end line is not repeated when the last mark already said it.
    expect(lines).toHaveLength(5);
    expect(lines[4]).toMatch(/^train: 1000\/1000 \(100%\) done eval 80\.0%, /);
    vi.advanceTimersByTime(120_000);
    expect(lines).toHaveLength(5); // stopped: the timer is gone
    expect(lines.join('\n')).not.toMatch(/\{\w+\}/);
  });
});
