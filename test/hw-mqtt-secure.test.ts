import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { FollowerPlant } from '../src/hw/mqtt/follower-plant.js';
import { serveMqttDevice } from '../src/hw/mqtt/mqtt-device.js';
import { MqttRobot } from '../src/hw/mqtt/mqtt-robot.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const openssl = hasOpenssl();
if (!openssl)
  console.warn('hw-mqtt-secure: skipping the TLS cases: openssl is not installed to make a test certificate');

describe.skipIf(!openssl)('MQTT bridge with TLS and credentials (embedded broker)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-mqtt-tls-'));
  let cert: Buffer;
  let broker: RunningBroker;
  const auth = { username: 'robot', password: 's3cret' };

  beforeAll(async () => {
    // A throwaway self-signed certificate for 127.0.0.1 (EC keys are quick to make).
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      ], // prettier-ignore
      { stdio: 'ignore' },
    );
    cert = readFileSync(join(dir, 'cert.pem'));
    broker = await startEmbeddedBroker({
      port: 0,
      tls: { cert, key: readFileSync(join(dir, 'key.pem')) },
      credentials: auth,
    });
  });
  afterAll(async () => {
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('round-trips over mqtts:// with username and password', async () => {
    expect(broker.url).toMatch(/^mqtts:\/\//);
    const url = `${broker.url}/secure-arm`;
    const applied: number[] = [];
    const plant = new FollowerPlant({ joints: 2, rateHz: 100, onCommand: (a) => applied.push(a[0]) });
    const device = await serveMqttDevice(url, plant, { ...auth, tls: { ca: cert } });
    const robot = await MqttRobot.connect(url, { ...auth, tls: { ca: cert } });
    try {
      expect(robot.capabilities.actionDim).toBe(2);
      const end = performance.now() + 3_000;
      while (robot.status !== 'connected' && performance.now() < end)
        await new Promise((r) => setTimeout(r, 10));
      expect(robot.send({ action: Float32Array.of(0.25, 0), validForMs: 500 })).toBe(true);
      while (applied.length === 0 && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
      expect(applied).toEqual([0.25]);
    } finally {
      await robot.close();
      await device.close();
    }
  });

  it('refuses wrong credentials at once, with the fix', async () => {
    const t0 = performance.now();
    await expect(
      MqttRobot.connect(`${broker.url}/secure-arm`, {
        username: 'robot',
        password: 'nope',
        tls: { ca: cert },
      }),
    ).rejects.toThrow(/refused the credentials[\s\S]*fix: check username\/password/);
    expect(performance.now() - t0).toBeLessThan(3_000); // not the 10 s connect timeout
  });

  it('refuses a broker certificate it cannot verify', async () => {
    await expect(
      MqttRobot.connect(`${broker.url}/secure-arm`, { ...auth, connectTimeoutMs: 500 }),
    ).rejects.toThrow(/cannot connect to MQTT broker mqtts:.*(self-signed|certificate)/);
  });
});
