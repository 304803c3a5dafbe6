import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  loadRobotConfig,
  observationLength,
  parseRobotConfig,
  parseRobotUrl,
} from '../src/hw/robot-config.js';
import { ResrtError } from '../src/util/errors.js';

const good = {
  name: 'arm-1',
  transport: 'mqtt://127.0.0.1:1883/arm-1',
  rateHz: 20,
  commandValidMs: 100,
  action: { dim: 2, names: ['shoulder', 'elbow'], low: [-1, -0.5], high: [1, 0.5], safe: [0, 0] },
  observation: [
    { field: 'positions' },
    { field: 'velocities', indices: [1] },
    { field: 'sensors', indices: [2, 0] },
  ],
  episode: {
    maxSteps: 200,
    reset: { mode: 'home', waypoints: [{ action: [0, 0.2], holdMs: 500 }] },
    success: { mode: 'sensor', index: 2, threshold: 0.8 },
  },
};

type Json = Record<string, unknown>;
/** A copy of `good` with one dotted path set (undefined deletes it). */
function withField(path: string, value: unknown): Json {
  const copy = structuredClone(good) as Json;
  const keys = path.split('.');
  let obj = copy;
  for (const k of keys.slice(0, -1)) obj = obj[k] as Json;
  const last = keys.at(-1)!;
  if (value === undefined) delete obj[last];
  else obj[last] = value;
  return copy;
}

function errorOf(raw: unknown): string {
  try {
    parseRobotConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ResrtError);
    return (err as Error).message;
  }
  throw new Error('expected the config to be rejected');
}

describe('robot config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-hw-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts a valid config and expands the "manual" shorthands', () => {
    const cfg = parseRobotConfig(good);
    expect(cfg.episode.reset).toEqual({ mode: 'home', waypoints: [{ action: [0, 0.2], holdMs: 500 }] });
    expect(observationLength(cfg, { jointCount: 2, sensorCount: 3 })).toBe(2 + 1 + 2);
    const manual = parseRobotConfig(
      withField('episode', { maxSteps: 5, reset: 'manual', success: 'manual' }),
    );
    expect(manual.episode.reset).toEqual({ mode: 'manual' });
    expect(manual.episode.success).toEqual({ mode: 'manual' });
  });

  it.each([
    [
      'action.safe',
      [0, 0.9],
      /action\.safe\[1\]: safe action 0\.9 is outside the limits \[-0\.5, 0\.5\] of elbow/,
    ],
    ['action.safe', [0], /action\.safe: has 1 entries but action\.dim is 2/],
    ['action.names', ['a', 'a'], /action\.names: has a repeated name/],
    ['action.low', [-1, 0.6], /action\.low\[1\]: low 0\.6 is not below high 0\.5/],
    ['action.high', [1, 2], /action\.high\[1\]: must be inside \[-1, 1\]/],
    ['action.dim', 0, /action\.dim: must be >= 1/],
    ['rateHz', 0, /rateHz: must be in \(0, 1000\] Hz/],
    ['rateHz', 'fast', /rateHz: must be a number/],
    ['rateHz', undefined, /rateHz: is missing; fix: add it/],
    ['commandValidMs', 2.5, /commandValidMs: must be an integer/],
    ['name', 'my robot', /name: use 1-64 characters/],
    [
      'transport',
      'tcp://host/x',
      /transport: robot transport "tcp:\/\/host\/x" has an unknown scheme; write serial:/,
    ],
    ['transport', 'mqtt://host:1883/', /transport: .*names no robot id/],
    ['observation', [], /observation: list at least one state field/],
    ['observation', [{ field: 'torques' }], /observation\[0\]\.field: must be one of positions, velocities/],
    [
      'observation',
      [{ field: 'sensors', indices: [1, 1] }],
      /observation\[0\]\.indices: has a repeated index/,
    ],
    ['episode.maxSteps', -3, /episode\.maxSteps: must be >= 1/],
    ['episode.reset', 'auto', /episode\.reset: must be "manual" or \{"mode":"home"/],
    [
      'episode.reset',
      { mode: 'home', waypoints: [] },
      /episode\.reset\.waypoints: a home reset needs at least one/,
    ],
    [
      'episode.reset',
      { mode: 'home', waypoints: [{ action: [0, 0.7], holdMs: 100 }] },
      /episode\.reset\.waypoints\[0\]\.action\[1\]: waypoint value 0\.7 is outside the limits/,
    ],
    [
      'episode.reset',
      { mode: 'home', waypoints: [{ action: [0], holdMs: 100 }] },
      /episode\.reset\.waypoints\[0\]\.action: has 1 entries but action\.dim is 2/,
    ],
    ['episode.success', { mode: 'sensor', index: -1, threshold: 1 }, /episode\.success\.index: must be >= 0/],
    ['episode.success', { mode: 'sensor', index: 0 }, /episode\.success\.threshold: is missing/],
    ['episode.success', 'sometimes', /episode\.success: must be "manual" or \{"mode":"sensor"/],
    ['extra', 1, /extra: unknown key; fix: remove it; the keys allowed here are "name", "transport"/],
  ])('names the field when %s = %j', (path, value, pattern) => {
    const message = errorOf(withField(path, value));
    expect(message).toMatch(pattern);
    expect(message).toMatch(/fix: /);
  });

  it('loads a file and reports JSON and path problems with the fix', () => {
    const ok = join(dir, 'ok.json');
    writeFileSync(ok, JSON.stringify(good));
    expect(loadRobotConfig(ok).name).toBe('arm-1');
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{ "name": "x", }');
    expect(() => loadRobotConfig(broken)).toThrow(
      /broken\.json is not valid JSON[\s\S]*fix: fix the JSON syntax/,
    );
    expect(() => loadRobotConfig(join(dir, 'missing.json'))).toThrow(/cannot read robot config/);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify(withField('action.safe', [2, 0])));
    expect(() => loadRobotConfig(bad)).toThrow(
      /robot config .*bad\.json is invalid:\n {2}- action\.safe\[0\]/,
    );
  });
});

describe('parseRobotUrl', () => {
  it('parses serial and mqtt transports', () => {
    expect(parseRobotUrl('serial:/dev/ttyUSB0')).toEqual({ kind: 'serial', path: '/dev/ttyUSB0' });
    expect(parseRobotUrl('serial:///dev/ttyACM1?baud=921600')).toEqual({
      kind: 'serial',
      path: '/dev/ttyACM1',
      baudRate: 921600,
    });
    expect(parseRobotUrl('mqtt://10.0.0.5:1884/arm-1')).toEqual({
      kind: 'mqtt',
      brokerUrl: 'mqtt://10.0.0.5:1884',
      robotId: 'arm-1',
    });
    expect(parseRobotUrl('mqtts://broker.local/arm-1')).toEqual({
      kind: 'mqtt',
      brokerUrl: 'mqtts://broker.local:8883',
      robotId: 'arm-1',
    });
    expect(parseRobotUrl('mqtt://broker/arm')).toMatchObject({ brokerUrl: 'mqtt://broker:1883' });
  });

  it.each([
    ['', /empty/],
    ['serial:ttyUSB0', /does not name a device path/],
    ['serial:/dev/ttyUSB0?parity=even', /unknown option/],
    ['mqtt://user:pw@host/arm', /credentials in the URL/],
    ['mqtt://host/a/b', /not a valid topic level/],
    ['mqtt://host/arm#x', /query or fragment/],
    ['ws://host/arm', /unknown scheme/],
  ])('rejects %j', (url, pattern) => {
    expect(() => parseRobotUrl(url)).toThrow(pattern);
    expect(() => parseRobotUrl(url)).toThrow(ResrtError);
  });
});
