/**
 * Serial link benchmark: SerialRobot over a pseudo-terminal to the C firmware bridge (host build).
 *  - command -> state round trip (host sends COMMAND seq s; time until a STATE reports s applied)
 *  - sustained command rates: 250, 500, 1000, 2000 Hz for a few seconds each
 *
 * usage: npx tsx bench/hw-serial.ts [--json] [--seconds S] [--joints N] [--rates 250,500,...]
 * The port is opened at 1 Mbaud; a pty ignores the baud rate, so the table also shows how much of
 * a real 1 Mbaud UART (8N1: 100 kB/s per direction) the traffic would use.
 */
import { buildHostFirmware, spawnHostFirmware } from '../src/hw/serial/host-firmware.js';
import { seqNewer } from '../src/hw/serial/protocol.js';
import { SerialRobot } from '../src/hw/serial/serial-robot.js';
import { percentiles } from '../src/util/stats.js';

interface RateResult {
  targetHz: number;
  achievedHz: number;
  commandsSent: number;
  /** Sent but not applied by the firmware (its own count). */
  drops: number;
  /** Commands no STATE ever confirmed (includes ones superseded inside one read). */
  unconfirmed: number;
  /** Send slots missed because the host loop was late. */
  lateSlots: number;
  rttP50Ms: number;
  rttP99Ms: number;
  rttMaxMs: number;
  crcErrors: number;
  nacks: number;
  bytesPerSecondIn: number;
  bytesPerSecondOut: number;
  /** Of one direction of a 1 Mbaud 8N1 UART (100 kB/s). */
  uartLoadPercent: number;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const json = process.argv.includes('--json');
const seconds = Number(arg('--seconds') ?? 3);
const joints = Number(arg('--joints') ?? 6);
const rates = (arg('--rates') ?? '250,500,1000,2000').split(',').map(Number);
if (!(seconds > 0) || !Number.isInteger(joints) || joints < 1 || joints > 12 || rates.some((r) => !(r > 0))) {
  process.stderr.write('hw-serial bench: --seconds > 0, --joints in [1, 12], --rates positive numbers\n');
  process.exit(2);
}

const immediate = (): Promise<void> => new Promise((r) => setImmediate(r));

async function runRate(bin: string, targetHz: number): Promise<RateResult> {
  // STATE goes out after every applied command, plus at the firmware's own rate when idle.
  const fw = await spawnHostFirmware(bin, { joints, rateHz: 100, watchdogMs: 200, log: true });
  const robot = await SerialRobot.open(fw.path, {
    baudRate: 1_000_000,
    heartbeatMs: 50,
    linkTimeoutMs: 500,
    reconnect: false,
  });
  const pending = new Map<number, number>();
  const rtts: number[] = [];
  const sub = robot.state$.subscribe((s) => {
    for (const [seq, t] of pending) {
      if (seq === s.lastCommandSeq || seqNewer(s.lastCommandSeq, seq)) {
        rtts.push(s.receivedAtMs - t);
        pending.delete(seq);
      }
    }
  });
  const action = new Float32Array(joints);
  const period = 1000 / targetHz;
  const c0 = robot.counters();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let next = t0;
  let sent = 0;
  let late = 0;
  while (performance.now() < end) {
    const now = performance.now();
    if (now < next) {
      // Sleep through most of the gap; spin (yielding to I/O) only for the last 1.5 ms.
      if (next - now > 1.5) await new Promise((r) => setTimeout(r, next - now - 1.5));
      else await immediate();
      continue;
    }
    // More than two periods behind: skip the missed slots rather than bursting.
    if (now - next > 2 * period) {
      const missed = Math.floor((now - next) / period);
      late += missed;
      next += missed * period;
    }
    next += period;
    for (let i = 0; i < joints; i++) action[i] = 0.5 * Math.sin(now / 200 + i);
    const tSend = performance.now();
    if (robot.send({ action, validForMs: 100 })) {
      pending.set(robot.lastCommandSeq, tSend);
      sent++;
    }
  }
  const elapsed = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 50)); // let the last states arrive
  sub.unsubscribe();
  const c1 = robot.counters();
  await robot.close();
  await fw.stop();
  const applied = Number(
    /applied (\d+)/.exec(
      fw
        .stderr()
        .split('\n')
        .filter((l) => l.includes('exiting'))
        .pop() ?? '',
    )?.[1] ?? NaN,
  );
  const p = percentiles(rtts);
  const bytesIn = (c1.bytesIn - c0.bytesIn) / elapsed;
  const bytesOut = (c1.bytesOut - c0.bytesOut) / elapsed;
  return {
    targetHz,
    achievedHz: sent / elapsed,
    commandsSent: sent,
    drops: sent - applied,
    unconfirmed: pending.size,
    lateSlots: late,
    rttP50Ms: p.p50,
    rttP99Ms: p.p99,
    rttMaxMs: p.max,
    crcErrors: c1.crcErrors - c0.crcErrors,
    nacks: c1.nacks - c0.nacks,
    bytesPerSecondIn: bytesIn,
    bytesPerSecondOut: bytesOut,
    uartLoadPercent: (100 * Math.max(bytesIn, bytesOut)) / 100_000,
  };
}

const bin = buildHostFirmware();
const results: RateResult[] = [];
for (const hz of rates) results.push(await runRate(bin, hz));
const at500 = results.find((r) => r.targetHz === 500);
const sustained = results.filter((r) => r.achievedHz >= 0.95 * r.targetHz && r.drops === 0 && r.rttP99Ms < 2);
const summary = {
  bench: 'hw-serial',
  transport: 'pty (C firmware bridge host build), opened at 1000000 baud',
  joints,
  secondsPerRate: seconds,
  rates: results,
  highestSustainedHz: sustained.length ? Math.max(...sustained.map((r) => r.targetHz)) : 0,
  goal500HzP99Under2Ms: at500 ? at500.achievedHz >= 0.95 * 500 && at500.rttP99Ms < 2 : null,
};

if (json) {
  process.stdout.write(JSON.stringify(summary) + '\n');
} else {
  const f = (v: number, d = 2): string => (Number.isFinite(v) ? v.toFixed(d) : '-');
  console.log(`hw-serial: ${summary.transport}, ${joints} joints, ${seconds} s per rate`);
  console.log(
    'target Hz | achieved Hz | sent  | drops | unconfirmed | late | rtt p50 ms | rtt p99 ms | rtt max ms | crc err | 1Mbaud load %',
  );
  for (const r of results) {
    console.log(
      [
        String(r.targetHz).padStart(9),
        f(r.achievedHz, 1).padStart(11),
        String(r.commandsSent).padStart(5),
        String(r.drops).padStart(5),
        String(r.unconfirmed).padStart(11),
        String(r.lateSlots).padStart(4),
        f(r.rttP50Ms, 3).padStart(10),
        f(r.rttP99Ms, 3).padStart(10),
        f(r.rttMaxMs, 3).padStart(10),
        String(r.crcErrors).padStart(7),
        f(r.uartLoadPercent, 1).padStart(13),
      ].join(' | '),
    );
  }
  console.log(
    `highest sustained rate (>=95% of target, no drops, p99 < 2 ms): ${summary.highestSustainedHz} Hz`,
  );
  console.log(`goal 500 Hz with p99 round trip < 2 ms: ${summary.goal500HzP99Under2Ms ? 'met' : 'not met'}`);
}
