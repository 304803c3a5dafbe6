// `resrt calibrate` as a person runs it, against the virtual SO-101-like arm: the prompts go to
// stderr, Enter comes on stdin, and between them the test moves the arm as the person would.
// Then `resrt servo scan` lists the bus.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Calibration } from '../src/hw/servo/calibration.js';
import { startVirtualServoArm } from '../src/hw/servo/virtual/virtual-arm.js';
import { JOINTS } from '../src/sim/tasks/so101/model.js';
import { RESRT_CLI } from './fixtures/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-cli-servo-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('resrt calibrate and servo scan', () => {
  it('records the arm through its prompts, answered on stdin, and scans the bus', async () => {
    const arm = await startVirtualServoArm({ protocol: 'dynamixel' });
    try {
      const config = arm.writeConfig(dir);
      const out = join(dir, 'recorded.json');
      const child = spawn(
        process.execPath,
        [...RESRT_CLI, 'calibrate', '--robot', arm.robotUrl, '--robot-config', config, '--out', out],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let stderr = '';
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const mid = Object.fromEntries(JOINTS.map((j) => [j.name, (j.low + j.high) / 2]));
      const waitFor = async (re: RegExp): Promise<void> => {
        while (!re.test(stderr)) await new Promise((r) => setTimeout(r, 20));
      };
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const done = new Promise<number | null>((resolve) => child.once('exit', resolve));
      await waitFor(/middle of its range/);
      arm.plant.moveJoints(mid);
      child.stdin.write('\n');
      await waitFor(/whole range of motion/);
      for (const end of ['low', 'high'] as const) {
        arm.plant.moveJoints(Object.fromEntries(JOINTS.map((j) => [j.name, j[end]])));
        await new Promise((r) => setTimeout(r, 400));
      }
      arm.plant.moveJoints(mid);
      await new Promise((r) => setTimeout(r, 200));
      child.stdin.end('\n');
      expect(await done).toBe(0);
      expect(stdout).toMatch(/calibration written to/);
      const cal = JSON.parse(readFileSync(out, 'utf8')) as Calibration;
      for (const j of JOINTS) {
        const want = arm.calibration.joints[j.name];
        expect(Math.abs(cal.joints[j.name].rangeMin - want.rangeMin)).toBeLessThanOrEqual(2);
        expect(Math.abs(cal.joints[j.name].rangeMax - want.rangeMax)).toBeLessThanOrEqual(2);
        expect(cal.joints[j.name].direction).toBe(want.direction);
      }
      const scan = await new Promise<string>((resolve, reject) => {
        const c = spawn(process.execPath, [
          ...RESRT_CLI,
          'servo',
          'scan',
          '--robot',
          arm.robotUrl,
          '--max-id',
          '21',
          // The emulated servos answer from this (loaded) test process: give them time.
          '--timeout-ms',
          '150',
          '--json',
        ]);
        let s = '';
        c.stdout.on('data', (d: Buffer) => (s += d.toString()));
        c.once('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`scan exited ${code}`))));
      });
      const found = JSON.parse(scan) as { servos: { id: number; model: string }[] };
      expect(found.servos.map((s) => [s.id, s.model])).toEqual([
        ...JOINTS.map((_, k) => [k + 1, 'xl330-m288']),
        [20, 'scene-board'],
      ]);
    } finally {
      await arm.close();
    }
  }, 120_000);
});
