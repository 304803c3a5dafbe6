/** `resrt virtual-servo-bus`, `resrt calibrate` and `resrt servo scan`: servo-bus arms (docs/servo-bus.md). */
import { mkdirSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import type { Command } from 'commander';
import { loadRobotConfig, parseRobotUrl } from '../hw/robot-config.js';
import { ServoBus } from '../hw/servo/bus.js';
import { recordCalibration, saveCalibration, type CalibrationPrompts } from '../hw/servo/calibration.js';
import { modelByNumber } from '../hw/servo/models.js';
import { SCENE_BOARD_MODEL } from '../hw/servo/scene-board.js';
import type { ProtocolName } from '../hw/servo/packet.js';
import { sectionProtocol } from '../hw/servo/servo-config.js';
import { startVirtualServoArm } from '../hw/servo/virtual/virtual-arm.js';
import { ResrtError } from '../util/errors.js';
import { formatTable, parseFloatArg, parseIntArg } from './common.js';

export function registerServoCommands(program: Command): void {
  program
    .command('virtual-servo-bus')
    .description(
      'serve the SO-101-like arm (MuJoCo) as emulated Feetech or Dynamixel servos on a pseudo-terminal bus',
    )
    .option('--protocol <name>', 'feetech (STS3215, SO-101) or dynamixel (XL330, Koch)', 'feetech')
    .option('--config-dir <dir>', 'write the robot config and calibration here', '.')
    .option(
      '--time-scale <x>',
      'simulated seconds per wall second',
      parseFloatArg('--time-scale', 0.1, 10),
      1,
    )
    .option(
      '--drop-rate <p>',
      'probability that a status packet is lost',
      parseFloatArg('--drop-rate', 0, 0.5),
      0,
    )
    .option('--on-fault <mode>', 'hold | torque-off (written into the robot config)', 'hold')
    .option('--seed <s>', 'first scene seed', parseIntArg('--seed', 0), 0)
    .option(
      '--lockstep',
      'physics advances one control period per goal write instead of in real time (reproducible on a busy machine; --time-scale then only sets the rate the robot config asks for)',
    )
    .action(async (opts: VirtualBusCliOptions) => {
      const protocol = protocolArg(opts.protocol);
      if (opts.onFault !== 'hold' && opts.onFault !== 'torque-off') {
        throw new ResrtError(
          `--on-fault ${opts.onFault} is not a mode`,
          'use --on-fault hold or --on-fault torque-off',
        );
      }
      mkdirSync(opts.configDir, { recursive: true });
      const arm = await startVirtualServoArm({
        protocol,
        timeScale: opts.timeScale,
        dropRate: opts.dropRate,
        seed: opts.seed,
        onFault: opts.onFault,
        lockstep: Boolean(opts.lockstep),
      });
      const configPath = arm.writeConfig(opts.configDir);
      console.log(
        `virtual ${protocol} servo bus (SO-101-like arm, task so101-pick-place) at ${arm.robotUrl}`,
      );
      console.log(`robot config written to ${configPath} (calibration beside it); try:`);
      console.log(
        `  npx resrt eval --task so101-pick-place --robot ${arm.robotUrl} --robot-config ${configPath} --virtual --policy expert --episodes 5`,
      );
      console.log('Ctrl-C stops it.');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await arm.close();
    });

  program
    .command('calibrate')
    .description("record a servo arm's homing offsets, ranges and directions into its calibration file")
    .requiredOption('--robot <url>', 'feetech:/dev/ttyACM0 or dynamixel:/dev/ttyUSB0')
    .requiredOption('--robot-config <file>', 'the robot config with the servo section')
    .option('--out <file>', 'write the calibration here (default: the file the robot config names)')
    .action(async (opts: { robot: string; robotConfig: string; out?: string }) => {
      const { url, config } = servoTarget(opts.robot, opts.robotConfig);
      const section = config.servo!;
      const bus = await ServoBus.open(url.path, {
        protocol: url.protocol,
        baudRate: url.baudRate,
        retries: section.retries,
        timeoutMarginMs: section.timeoutMarginMs,
      });
      const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: false });
      try {
        const cal = await recordCalibration(bus, section.joints, terminalPrompts(rl));
        const out = opts.out ?? section.calibration;
        saveCalibration(out, cal);
        console.log(
          formatTable(
            ['joint', 'id', 'homing offset', 'range', 'direction'],
            Object.entries(cal.joints).map(([name, j]) => [
              name,
              j.id,
              j.homingOffset,
              `${j.rangeMin}..${j.rangeMax}`,
              j.direction,
            ]),
          ),
        );
        console.log(`calibration written to ${out}`);
      } finally {
        rl.close();
        await bus.close();
      }
    });

  const servo = program.command('servo').description('servo-bus tools');
  servo
    .command('scan')
    .description('ping every id on a servo bus and list who answers (model, id)')
    .requiredOption('--robot <url>', 'feetech:/dev/ttyACM0 or dynamixel:/dev/ttyUSB0')
    .option('--max-id <n>', 'highest id to ping', parseIntArg('--max-id', 0), 252)
    .option(
      '--timeout-ms <ms>',
      'wait this long past the wire time for each answer',
      parseFloatArg('--timeout-ms', 1, 1000),
      35,
    )
    .option('--json', 'print one JSON object')
    .action(async (opts: { robot: string; maxId: number; timeoutMs: number; json?: boolean }) => {
      const url = parseRobotUrl(opts.robot);
      if (url.kind !== 'servo') {
        throw new ResrtError(
          `${opts.robot} is not a servo bus`,
          'write feetech:/dev/ttyACM0 or dynamixel:/dev/ttyUSB0',
        );
      }
      const bus = await ServoBus.open(url.path, {
        protocol: url.protocol,
        baudRate: url.baudRate,
        timeoutMarginMs: opts.timeoutMs,
      });
      try {
        const ids = Array.from({ length: Math.min(252, opts.maxId) + 1 }, (_, i) => i);
        const found = await bus.scan(ids, 1);
        const rows = found.map((f) => ({
          id: f.id,
          model:
            modelByNumber(url.protocol, f.modelNumber)?.name ??
            (f.modelNumber === SCENE_BOARD_MODEL ? 'scene-board' : 'unknown'),
          modelNumber: f.modelNumber,
        }));
        const c = bus.counters();
        if (opts.json) {
          console.log(
            JSON.stringify(
              { servos: rows, checksumErrors: c.checksumErrors, duplicateStatus: c.duplicateStatus },
              null,
              2,
            ),
          );
          return;
        }
        console.log(
          formatTable(
            ['id', 'model', 'model number'],
            rows.map((r) => [r.id, r.model, r.modelNumber]),
          ),
        );
        if (c.checksumErrors > 0) {
          console.log(
            `${c.checksumErrors} corrupt answers: two servos may share an id, or the baud rate is wrong; connect them one at a time`,
          );
        }
      } finally {
        await bus.close();
      }
    });
}

interface VirtualBusCliOptions {
  protocol: string;
  configDir: string;
  timeScale: number;
  dropRate: number;
  onFault: string;
  seed: number;
  lockstep?: boolean;
}

function protocolArg(p: string): ProtocolName {
  if (p !== 'feetech' && p !== 'dynamixel') {
    throw new ResrtError(
      `--protocol ${p} is not a servo protocol`,
      'use --protocol feetech or --protocol dynamixel',
    );
  }
  return p;
}

function servoTarget(robot: string, configPath: string) {
  const url = parseRobotUrl(robot);
  if (url.kind !== 'servo') {
    throw new ResrtError(
      `${robot} is not a servo bus`,
      'calibrate a servo arm: --robot feetech:/dev/ttyACM0 or dynamixel:/dev/ttyUSB0',
    );
  }
  const config = loadRobotConfig(configPath);
  if (!config.servo) {
    throw new ResrtError(
      `robot config ${configPath} has no "servo" section`,
      'add it (see docs/servo-bus.md)',
    );
  }
  if (sectionProtocol(config.servo) !== url.protocol) {
    throw new ResrtError(
      `${robot} is a ${url.protocol} bus but ${configPath} lists ${sectionProtocol(config.servo)} servos`,
      `use ${sectionProtocol(config.servo)}:${url.path}`,
    );
  }
  return { url, config };
}

/** Prompts on stderr, Enter on stdin (a pipe works as well as a terminal). */
function terminalPrompts(rl: Interface): CalibrationPrompts {
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let ended = false;
  rl.on('line', (l) => {
    const w = waiters.shift();
    if (w) w();
    else lines.push(l);
  });
  rl.on('close', () => {
    ended = true;
    for (const w of waiters.splice(0)) w();
  });
  const enter = (): Promise<void> => {
    if (lines.length > 0) {
      lines.shift();
      return Promise.resolve();
    }
    if (ended) {
      return Promise.reject(
        new ResrtError(
          'standard input ended before the calibration did',
          'run resrt calibrate in a terminal',
        ),
      );
    }
    return new Promise((resolve) => waiters.push(resolve));
  };
  return {
    async ask(message) {
      process.stderr.write(`${message}\n`);
      await enter();
    },
    async sweepUntilDone(message, poll) {
      process.stderr.write(`${message}\n`);
      let done = false;
      const finished = enter().then(() => {
        done = true;
      });
      finished.catch(() => {
        done = true;
      });
      while (!done) {
        await poll();
        await new Promise((r) => setTimeout(r, 20));
      }
      await finished;
    },
    log: (line) => process.stderr.write(`  ${line}\n`),
  };
}
