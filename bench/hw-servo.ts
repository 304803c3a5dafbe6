/**
 * Servo-bus benchmark: what one control tick of an arm costs on each bus — a SYNC WRITE of 6 goals
 * and a SYNC READ of 6 positions at 1 Mbaud — over a pseudo-terminal to the virtual bus (emulated
 * STS3215 / XL330-M288 servos, return delay 0) running in its own process, as an adapter would.
 *
 *  - back-to-back ticks for --seconds: tick latency p50/p99 and the highest sustained rate
 *  - ticks paced at --rate Hz (default 200) for --seconds: achieved rate and p99
 *  - the wire-time floor of one tick from the packet sizes (10 µs a byte at 1 Mbaud)
 * Aim: ≥ 200 Hz sustained, p99 ≤ 2 × floor + the servos' return delay.
 *
 * usage: npx tsx bench/hw-servo.ts [--json] [--seconds S] [--rate HZ]
 * A pty moves bytes at memory speed: measured times are the software stack's, the floor is what a
 * real 1 Mbaud wire adds on top.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ServoBus, codecFor } from '../src/hw/servo/bus.js';
import { encodeRegister, STS3215, XL330_M288, type MotorModel } from '../src/hw/servo/models.js';
import type { ProtocolName } from '../src/hw/servo/packet.js';
import { EmulatedServo, IdealJoint } from '../src/hw/servo/virtual/emulated-servo.js';
import { VirtualServoBus } from '../src/hw/servo/virtual/virtual-bus.js';
import { percentiles } from '../src/util/stats.js';

const IDS = [1, 2, 3, 4, 5, 6];
const MODELS: Record<ProtocolName, MotorModel> = { feetech: STS3215, dynamixel: XL330_M288 };

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

// Child mode: serve the virtual bus until stdin closes.
const serve = arg('--serve') as ProtocolName | undefined;
if (serve) {
  const model = MODELS[serve];
  const servos = IDS.map((id) => new EmulatedServo(model, id, new IdealJoint(2000 + id)));
  for (const s of servos) s.write(model.registers.torqueEnable.address, Uint8Array.of(1));
  const bus = await VirtualServoBus.start({ protocol: serve, devices: servos });
  process.stdout.write(`BUS ${bus.hostPath}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => void bus.close().then(() => process.exit(0)));
} else {
  await main();
}

interface Row {
  protocol: ProtocolName;
  floorMs: number;
  wireBytes: number;
  p50Ms: number;
  p99Ms: number;
  maxRateHz: number;
  pacedTargetHz: number;
  pacedAchievedHz: number;
  pacedP99Ms: number;
  pacedLateTicks: number;
  retries: number;
  failures: number;
  meetsAim: boolean;
}

async function startChild(protocol: ProtocolName): Promise<{ path: string; stop: () => void }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', protocol],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const path = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^BUS (\S+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`virtual bus exited with ${code}`)));
  });
  return { path, stop: () => child.stdin!.end() };
}

async function measure(protocol: ProtocolName, seconds: number, rate: number): Promise<Row> {
  const model = MODELS[protocol];
  const codec = codecFor(protocol);
  const goal = model.registers.goalPosition;
  const pos = model.registers.presentPosition;
  const f = codec.fieldBytes;
  const wireBytes =
    codec.instructionSize(2 * f + IDS.length * (1 + goal.size)) +
    codec.instructionSize(2 * f + IDS.length) +
    IDS.length * codec.statusSize(pos.size);
  const floorMs = wireBytes * 0.01;
  const child = await startChild(protocol);
  const bus = await ServoBus.open(child.path, { protocol, baudRate: 1_000_000 });
  let g = 0;
  const tick = async (): Promise<number> => {
    const t0 = performance.now();
    g = (g + 1) % 100;
    await bus.syncWrite(
      goal.address,
      goal.size,
      IDS.map((id) => ({ id, data: encodeRegister(goal, 2000 + g) })),
    );
    const r = await bus.syncRead(pos.address, pos.size, IDS);
    if (r.missing.length > 0) throw new Error(`servos ${r.missing.join(', ')} did not answer`);
    return performance.now() - t0;
  };
  try {
    for (let i = 0; i < 200; i++) await tick(); // warm-up
    const free: number[] = [];
    let end = performance.now() + seconds * 1000;
    const start = performance.now();
    while (performance.now() < end) free.push(await tick());
    const maxRateHz = free.length / ((performance.now() - start) / 1000);
    const paced: number[] = [];
    const period = 1000 / rate;
    let next = performance.now();
    let late = 0;
    const pacedStart = performance.now();
    end = pacedStart + seconds * 1000;
    while (performance.now() < end) {
      paced.push(await tick());
      next += period;
      const wait = next - performance.now();
      if (wait < 0) {
        late++;
        next = performance.now();
      } else {
        // Sleep most of the wait, then yield until the slot (timers fire ~1 ms late).
        if (wait > 2) await new Promise((r) => setTimeout(r, wait - 1.5));
        while (performance.now() < next) await new Promise((r) => setImmediate(r));
      }
    }
    const pacedAchievedHz = paced.length / ((performance.now() - pacedStart) / 1000);
    const { p50, p99 } = percentiles(free);
    const pacedP99 = percentiles(paced).p99;
    const c = bus.counters();
    return {
      protocol,
      floorMs,
      wireBytes,
      p50Ms: p50,
      p99Ms: p99,
      maxRateHz,
      pacedTargetHz: rate,
      pacedAchievedHz,
      pacedP99Ms: pacedP99,
      pacedLateTicks: late,
      retries: c.retries,
      failures: c.failures,
      meetsAim: pacedAchievedHz >= 0.99 * Math.min(rate, 200) && pacedP99 <= 2 * floorMs,
    };
  } finally {
    await bus.close();
    child.stop();
  }
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const seconds = Number(arg('--seconds') ?? 5);
  const rate = Number(arg('--rate') ?? 200);
  if (!(seconds > 0) || !(rate > 0)) {
    process.stderr.write('hw-servo bench: --seconds > 0, --rate > 0\n');
    process.exit(2);
  }
  const rows: Row[] = [];
  for (const p of ['feetech', 'dynamixel'] as const) rows.push(await measure(p, seconds, rate));
  if (json) {
    console.log(JSON.stringify({ bench: 'hw-servo', seconds, rows }));
    return;
  }
  const f = (v: number, d = 2): string => v.toFixed(d);
  console.log(
    'servo bus tick = sync write 6 goals + sync read 6 positions, 1 Mbaud, pty to a virtual bus in another process',
  );
  console.log(
    'bus        wire bytes  floor ms  p50 ms  p99 ms  max rate Hz  paced Hz (target)  paced p99 ms  late  retries  aim',
  );
  for (const r of rows) {
    console.log(
      `${r.protocol.padEnd(10)} ${String(r.wireBytes).padStart(10)}  ${f(r.floorMs).padStart(8)}  ${f(r.p50Ms).padStart(6)}  ${f(r.p99Ms).padStart(6)}  ${f(r.maxRateHz, 0).padStart(11)}  ${`${f(r.pacedAchievedHz, 1)} (${r.pacedTargetHz})`.padStart(17)}  ${f(r.pacedP99Ms).padStart(12)}  ${String(r.pacedLateTicks).padStart(4)}  ${String(r.retries).padStart(7)}  ${r.meetsAim ? 'met' : 'missed'}`,
    );
  }
}
