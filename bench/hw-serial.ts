/**
 * Serial link benchmark: SerialRobot over a pseudo-terminal to the C firmware bridge (host build).
 *  - command -> state round trip (host sends COMMAND seq s; time until a STATE reports s applied)
 *  - sustained command rates: 250, 500, 1000, 2000 Hz for a few seconds each
 *  - both host transports, one after the other at each rate: serialport (bytes arrive as events
 *    on the event loop) and the fd transport (a non-blocking fd read in Robot.poll(), which the
 *    sending loop calls each turn, as the control loop does each tick)
 *
 * usage: npx tsx bench/hw-serial.ts [--json] [--seconds S] [--joints N] [--rates 250,500,...]
 *        [--transports serialport,fd]
 * The port is opened at 1 Mbaud; a pty ignores the baud rate, so the table also shows how much of
 * a real 1 Mbaud UART (8N1: 100 kB/s per direction) the traffic would use.
 */
import { buildHostFirmware, spawnHostFirmware } from '../src/hw/serial/host-firmware.js';
import { seqNewer } from '../src/hw/serial/protocol.js';
import { SerialRobot } from '../src/hw/serial/serial-robot.js';
import type { SerialTransportKind } from '../src/hw/serial/transport.js';
import { percentiles } from '../src/util/stats.js';

interface RateResult {
  transport: SerialTransportKind;
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
const transports = (arg('--transports') ?? 'serialport,fd').split(',') as SerialTransportKind[];
if (
  !(seconds > 0) ||
  !Number.isInteger(joints) ||
  joints < 1 ||
  joints > 12 ||
  rates.some((r) => !(r > 0)) ||
  transports.some((t) => t !== 'serialport' && t !== 'fd')
) {
  process.stderr.write(
    'hw-serial bench: --seconds > 0, --joints in [1, 12], --rates positive numbers, --transports serialport,fd\n',
  );
  process.exit(2);
}

const immediate = (): Promise<void> => new Promise((r) => setImmediate(r));

async function runRate(bin: string, targetHz: number, transport: SerialTransportKind): Promise<RateResult> {
  // STATE goes out after every applied command, plus at the firmware's own rate when idle.
  const fw = await spawnHostFirmware(bin, { joints, rateHz: 100, watchdogMs: 200, log: true });
  const robot = await SerialRobot.open(fw.path, {
    baudRate: 1_000_000,
    heartbeatMs: 50,
    linkTimeoutMs: 500,
    reconnect: false,
    transport,
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
    // The fd transport reads here (the control loop polls once per tick); serialport: a no-op.
    robot.poll();
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
    transport,
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
// Each rate on both transports back to back, so a change in the machine's load hits both alike.
for (const hz of rates) for (const transport of transports) results.push(await runRate(bin, hz, transport));

const meets = (r: RateResult): boolean =>
  r.achievedHz >= 0.95 * r.targetHz && r.drops === 0 && r.rttP99Ms < 2;
const byTransport = Object.fromEntries(
  transports.map((t) => {
    const own = results.filter((r) => r.transport === t);
    const at500 = own.find((r) => r.targetHz === 500);
    const sustained = own.filter(meets);
    return [
      t,
      {
        highestSustainedHz: sustained.length ? Math.max(...sustained.map((r) => r.targetHz)) : 0,
        goal500HzP99Under2Ms: at500 ? meets(at500) : null,
      },
    ];
  }),
) as Partial<
  Record<SerialTransportKind, { highestSustainedHz: number; goal500HzP99Under2Ms: boolean | null }>
>;
const sp500 = results.find((r) => r.transport === 'serialport' && r.targetHz === 500);
const fd500 = results.find((r) => r.transport === 'fd' && r.targetHz === 500);
const summary = {
  bench: 'hw-serial',
  transport: 'pty (C firmware bridge host build), opened at 1000000 baud',
  joints,
  secondsPerRate: seconds,
  rates: results,
  transports: byTransport,
  // Kept for bench/hw.ts and older readers: serialport's figures.
  highestSustainedHz: byTransport.serialport?.highestSustainedHz ?? 0,
  goal500HzP99Under2Ms: byTransport.serialport?.goal500HzP99Under2Ms ?? null,
  /** fd / serialport round trip at 500 Hz, same run: under 1 means the fd transport is faster. */
  fdOverSerialport500Hz:
    sp500 && fd500 ? { p50: fd500.rttP50Ms / sp500.rttP50Ms, p99: fd500.rttP99Ms / sp500.rttP99Ms } : null,
};

if (json) {
  process.stdout.write(JSON.stringify(summary) + '\n');
} else {
  const f = (v: number, d = 2): string => (Number.isFinite(v) ? v.toFixed(d) : '-');
  console.log(`hw-serial: ${summary.transport}, ${joints} joints, ${seconds} s per rate`);
  console.log(
    'transport  | target Hz | achieved Hz | sent  | drops | unconfirmed | late | rtt p50 ms | rtt p99 ms | rtt max ms | crc err | 1Mbaud load %',
  );
  for (const r of results) {
    console.log(
      [
        r.transport.padEnd(10),
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
  for (const [t, v] of Object.entries(byTransport)) {
    console.log(
      `${t}: highest sustained rate (>=95% of target, no drops, p99 < 2 ms): ${v.highestSustainedHz} Hz; 500 Hz with p99 < 2 ms: ${v.goal500HzP99Under2Ms ? 'met' : 'not met'}`,
    );
  }
  if (summary.fdOverSerialport500Hz) {
    console.log(
      `fd / serialport round trip at 500 Hz: p50 x${f(summary.fdOverSerialport500Hz.p50, 2)}, p99 x${f(summary.fdOverSerialport500Hz.p99, 2)}`,
    );
  }
}
