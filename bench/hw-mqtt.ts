/**
 * MQTT bridge benchmark over loopback: MqttRobot → broker → serveMqttDevice (FollowerPlant) → broker
 * → MqttRobot, with the embedded aedes broker (MQTT 3.1.1) and with mosquitto (MQTT 5) when present.
 *  - round trip: send one command, wait for the state that reports it applied, repeat
 *    (the device publishes a state right after each applied command: stateOnCommand)
 *  - sustained command rates: paced sends at each target rate for a few seconds; a rate is
 *    sustained when ≥ 95% of the target is achieved, ≥ 99% of the sent commands are applied and the
 *    command→state p99 stays under --p99-limit-ms (default 20 ms)
 *
 * Numbers taken on a shared 2-core box under load from other processes are noisy; the p99s most of all.
 *
 * usage: npx tsx bench/hw-mqtt.ts [--json] [--seconds S] [--joints N] [--pings N] [--p99-limit-ms MS] [--rates 500,1000,...]
 */
import { formatTable } from '../src/cli/common.js';
import { sleepUntilNs } from '../src/hw/hardware-env.js';
import {
  findMosquitto,
  startEmbeddedBroker,
  startMosquitto,
  type RunningBroker,
} from '../src/util/mqtt-broker.js';
import { FollowerPlant } from '../src/hw/mqtt/follower-plant.js';
import { serveMqttDevice, type MqttDeviceCounters } from '../src/hw/mqtt/mqtt-device.js';
import { MqttRobot } from '../src/hw/mqtt/mqtt-robot.js';
import { percentiles } from '../src/util/stats.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const json = process.argv.includes('--json');
const seconds = Number(arg('--seconds') ?? 2);
const joints = Number(arg('--joints') ?? 6);
const pings = Number(arg('--pings') ?? 500);
const p99LimitMs = Number(arg('--p99-limit-ms') ?? 20);
const rates = (arg('--rates') ?? '500,1000,2000,4000,8000,16000').split(',').map(Number);
if (
  !(seconds > 0) ||
  !Number.isInteger(joints) ||
  joints < 1 ||
  joints > 64 ||
  !(pings >= 10) ||
  !(p99LimitMs > 0) ||
  rates.some((r) => !(r > 0))
) {
  process.stderr.write(
    'hw-mqtt bench: --seconds > 0, --joints in [1, 64], --pings >= 10, --p99-limit-ms > 0, --rates positive numbers\n',
  );
  process.exit(2);
}

interface RateResult {
  targetHz: number;
  achievedHz: number;
  sent: number;
  applied: number;
  /** Sent but not applied, by the device's counts (stale, out of order, ...). */
  dropped: number;
  rttP50Ms: number;
  rttP99Ms: number;
  sustained: boolean;
}

interface BrokerResult {
  broker: string;
  mqttVersion: 4 | 5;
  roundTrip: { count: number; lost: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number };
  rates: RateResult[];
  maxSustainedHz: number | null;
}

const VALID_FOR_MS = 100;
const immediate = (): Promise<void> => new Promise((r) => setImmediate(r));

async function withLink<T>(
  broker: RunningBroker,
  id: string,
  fn: (robot: MqttRobot, counters: () => MqttDeviceCounters) => Promise<T>,
): Promise<T> {
  const url = `${broker.url}/${id}`;
  const plant = new FollowerPlant({ joints, rateHz: 100 });
  // A long watchdog: the benchmark pauses between phases and should not measure holds.
  const device = await serveMqttDevice(url, plant, { stateOnCommand: true, watchdogMs: 5_000 });
  const robot = await MqttRobot.connect(url);
  try {
    const end = performance.now() + 5_000;
    while (robot.status !== 'connected') {
      if (performance.now() > end) throw new Error(`${id}: robot did not connect`);
      await new Promise((r) => setTimeout(r, 10));
    }
    try {
      return await fn(robot, () => device.counters());
    } catch (err) {
      process.stderr.write(
        `device ${JSON.stringify(device.counters())}\nrobot ${JSON.stringify(robot.counters())}\n`,
      );
      throw err;
    }
  } finally {
    await robot.close();
    await device.close();
  }
}

async function roundTrip(robot: MqttRobot): Promise<BrokerResult['roundTrip']> {
  const samples: number[] = [];
  let lost = 0;
  const action = new Float32Array(joints);
  for (let i = 0; i < pings + 20; i++) {
    action.fill(((i % 20) - 10) / 20);
    const t0 = performance.now();
    if (!robot.send({ action, validForMs: VALID_FOR_MS })) throw new Error('send refused');
    const seq = robot.lastSentSeq;
    // A command can be dropped legitimately (e.g. stale after a stall on a loaded box): count it, go on.
    const deadline = t0 + 2 * VALID_FOR_MS;
    while (robot.lastAppliedSeq < seq && performance.now() < deadline) await immediate();
    if (robot.lastAppliedSeq < seq) lost++;
    else if (i >= 20) samples.push(performance.now() - t0); // the first ones warm up JIT and sockets
  }
  const p = percentiles(samples);
  return { count: p.count, lost, p50Ms: p.p50, p90Ms: p.p90, p99Ms: p.p99, maxMs: p.max };
}

async function sustained(robot: MqttRobot, applied: () => number, targetHz: number): Promise<RateResult> {
  const periodNs = BigInt(Math.round(1e9 / targetHz));
  const action = new Float32Array(joints);
  const appliedBefore = applied();
  const startSeq = robot.lastSentSeq;
  const rtts: number[] = [];
  const sentAt = new Map<number, number>();
  const sub = robot.state$.subscribe(() => {
    const seq = robot.lastAppliedSeq;
    const t = sentAt.get(seq);
    if (t !== undefined) {
      rtts.push(performance.now() - t);
      sentAt.delete(seq);
    }
  });
  let sent = 0;
  const t0 = performance.now();
  let next = process.hrtime.bigint();
  const endNs = next + BigInt(Math.round(seconds * 1e9));
  while (next < endNs) {
    action[0] = Math.sin(sent / 50);
    if (robot.send({ action, validForMs: VALID_FOR_MS })) {
      sent++;
      sentAt.set(robot.lastSentSeq, performance.now());
      if (sentAt.size > 10_000) sentAt.delete(sentAt.keys().next().value as number);
    }
    next += periodNs;
    await sleepUntilNs(next);
  }
  const elapsedS = (performance.now() - t0) / 1000;
  // Let the last commands land.
  const settle = performance.now() + 500;
  while (robot.lastAppliedSeq < startSeq + sent && performance.now() < settle)
    await new Promise((r) => setTimeout(r, 5));
  sub.unsubscribe();
  const appliedCount = applied() - appliedBefore;
  const p = percentiles(rtts);
  const achievedHz = sent / elapsedS;
  return {
    targetHz,
    achievedHz,
    sent,
    applied: appliedCount,
    dropped: sent - appliedCount,
    rttP50Ms: p.p50,
    rttP99Ms: p.p99,
    sustained: achievedHz >= 0.95 * targetHz && appliedCount >= 0.99 * sent && p.p99 <= p99LimitMs,
  };
}

async function benchBroker(
  name: string,
  tag: string,
  start: () => Promise<RunningBroker>,
): Promise<BrokerResult> {
  const broker = await start();
  try {
    let mqttVersion: 4 | 5 = 4;
    const rt = await withLink(broker, `bench-rt-${tag}`, async (robot) => {
      mqttVersion = robot.protocolVersion;
      return roundTrip(robot);
    });
    const rateResults: RateResult[] = [];
    for (const hz of rates) {
      rateResults.push(
        await withLink(broker, `bench-rate-${tag}-${hz}`, (robot, counters) =>
          sustained(robot, () => counters().applied, hz),
        ),
      );
    }
    const ok = rateResults.filter((r) => r.sustained).map((r) => r.targetHz);
    return {
      broker: name,
      mqttVersion,
      roundTrip: rt,
      rates: rateResults,
      maxSustainedHz: ok.length ? Math.max(...ok) : null,
    };
  } finally {
    await broker.close();
  }
}

const results: BrokerResult[] = [];
results.push(await benchBroker('aedes (embedded)', 'aedes', () => startEmbeddedBroker({ port: 0 })));
const mosquitto = findMosquitto();
if (mosquitto) results.push(await benchBroker('mosquitto', 'mosquitto', () => startMosquitto({ port: 0 })));

const summary = {
  benchmark: 'hw-mqtt',
  transport: 'MQTT over TCP loopback (127.0.0.1), robot and device in one Node process',
  joints,
  secondsPerRate: seconds,
  commandValidForMs: VALID_FOR_MS,
  sustainedP99LimitMs: p99LimitMs,
  mosquitto: mosquitto ? 'present' : 'not installed (skipped)',
  results,
};

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : '-');
if (json) {
  process.stdout.write(JSON.stringify(summary) + '\n');
} else {
  console.log(`hw-mqtt: ${summary.transport}, ${joints} joints, ${seconds} s per rate`);
  console.log(
    formatTable(
      ['broker', 'MQTT', 'round trips', 'lost', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'max sustained Hz'],
      results.map((r) => [
        r.broker,
        r.mqttVersion === 5 ? '5' : '3.1.1',
        r.roundTrip.count,
        r.roundTrip.lost,
        ms(r.roundTrip.p50Ms),
        ms(r.roundTrip.p90Ms),
        ms(r.roundTrip.p99Ms),
        ms(r.roundTrip.maxMs),
        r.maxSustainedHz ?? 'none',
      ]),
    ),
  );
  console.log('');
  console.log(
    formatTable(
      [
        'broker',
        'target Hz',
        'achieved Hz',
        'sent',
        'applied',
        'dropped',
        'rtt p50 ms',
        'rtt p99 ms',
        'sustained',
      ],
      results.flatMap((r) =>
        r.rates.map((x) => [
          r.broker,
          x.targetHz,
          x.achievedHz.toFixed(0),
          x.sent,
          x.applied,
          x.dropped,
          ms(x.rttP50Ms),
          ms(x.rttP99Ms),
          x.sustained ? 'yes' : 'no',
        ]),
      ),
    ),
  );
  if (!mosquitto) console.log('mosquitto not installed: only the embedded broker was measured');
}
