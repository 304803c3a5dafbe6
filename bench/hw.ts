/**
 * bench/hw: command→state round trip and sustained command rate over both links, in one table:
 * the serial link over a real pseudo-terminal to the C firmware host build (bench/hw-serial.ts)
 * and MQTT over loopback with the embedded broker and mosquitto (bench/hw-mqtt.ts). Each runs in
 * its own process so neither disturbs the other's timing.
 *
 *   npx tsx bench/hw.ts [--json]
 */
import { execFileSync } from 'node:child_process';
import { formatTable } from '../src/cli/common.js';

interface SerialRate {
  transport: 'serialport' | 'fd';
  targetHz: number;
  achievedHz: number;
  drops: number;
  rttP50Ms: number;
  rttP99Ms: number;
}
interface SerialResult {
  rates: SerialRate[];
  transports: Partial<
    Record<'serialport' | 'fd', { highestSustainedHz: number; goal500HzP99Under2Ms: boolean | null }>
  >;
  highestSustainedHz: number;
  fdOverSerialport500Hz: { p50: number; p99: number } | null;
}
interface MqttRate {
  targetHz: number;
  achievedHz: number;
  dropped: number;
  rttP50Ms: number;
  rttP99Ms: number;
}
interface MqttResult {
  results: { broker: string; mqttVersion: number; rates: MqttRate[]; maxSustainedHz: number | null }[];
}

function runJson<T>(script: string, args: string[] = []): T {
  const out = execFileSync(process.execPath, ['--import', 'tsx', script, '--json', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 1 << 24,
  });
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}

const serial = runJson<SerialResult>('bench/hw-serial.ts');
const mqtt = runJson<MqttResult>('bench/hw-mqtt.ts', ['--rates', '250,500,1000,2000']);

const rows: (string | number)[][] = [];
for (const r of serial.rates) {
  rows.push([
    `serial ${r.transport} (pty → C firmware)`,
    r.targetHz,
    r.achievedHz.toFixed(1),
    r.drops,
    r.rttP50Ms.toFixed(3),
    r.rttP99Ms.toFixed(3),
  ]);
}
for (const b of mqtt.results) {
  for (const r of b.rates) {
    rows.push([
      `mqtt ${b.broker} (v${b.mqttVersion === 5 ? 5 : '3.1.1'})`,
      r.targetHz,
      r.achievedHz.toFixed(1),
      r.dropped,
      r.rttP50Ms.toFixed(3),
      r.rttP99Ms.toFixed(3),
    ]);
  }
}

const summary = {
  bench: 'hw',
  serial_highest_sustained_hz: serial.highestSustainedHz,
  serial_goal_500hz_p99_under_2ms: serial.rates.some(
    (r) =>
      r.transport === 'serialport' &&
      r.targetHz === 500 &&
      r.achievedHz >= 475 &&
      r.drops === 0 &&
      r.rttP99Ms < 2,
  ),
  serial_fd_highest_sustained_hz: serial.transports.fd?.highestSustainedHz ?? null,
  serial_fd_goal_500hz_p99_under_2ms: serial.rates.some(
    (r) =>
      r.transport === 'fd' && r.targetHz === 500 && r.achievedHz >= 475 && r.drops === 0 && r.rttP99Ms < 2,
  ),
  serial_fd_over_serialport_500hz: serial.fdOverSerialport500Hz,
  mqtt_max_sustained_hz: Object.fromEntries(mqtt.results.map((b) => [b.broker, b.maxSustainedHz])),
  serial,
  mqtt,
};

if (process.argv.includes('--json')) {
  console.log(JSON.stringify(summary));
} else {
  console.log(
    'bench/hw: command→state round trip at fixed command rates (see bench/hw-serial.ts and bench/hw-mqtt.ts for details)',
  );
  console.log(formatTable(['link', 'target Hz', 'achieved Hz', 'drops', 'rtt p50 ms', 'rtt p99 ms'], rows));
  console.log(
    `serial (serialport): 500 Hz with p99 < 2 ms: ${summary.serial_goal_500hz_p99_under_2ms ? 'met' : 'not met'}`,
  );
  console.log(
    `serial (fd): 500 Hz with p99 < 2 ms: ${summary.serial_fd_goal_500hz_p99_under_2ms ? 'met' : 'not met'}`,
  );
  const ratio = summary.serial_fd_over_serialport_500hz;
  if (ratio)
    console.log(
      `serial fd / serialport round trip at 500 Hz: p50 x${ratio.p50.toFixed(2)}, p99 x${ratio.p99.toFixed(2)}`,
    );
}
