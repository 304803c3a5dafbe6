/** `resrt learner` and `resrt actor`: a real-world fine-tuning session (docs/sessions.md). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SuccessDetector } from '../runtime/success-detector.js';
import type { Command } from 'commander';
import { hasCheckpoint } from '../residual/checkpoint.js';
import { actorRobot } from '../hw/actor-robot.js';
import { virtualSceneOf } from '../hw/connect.js';
import { loadRobotConfig, parseRobotUrl } from '../hw/robot-config.js';
import { loadCalibration } from '../hw/servo/calibration.js';
import { LeaderArm } from '../hw/servo/leader-arm.js';
import type { ProfileName } from '../residual/config.js';
import { runLearnerService } from '../residual/service/index.js';
import {
  attachTerminalKeys,
  runActor,
  type ActorHandle,
  type ActorOptions,
} from '../runtime/session/index.js';
import { loadSafetyConfig } from '../safety/index.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask } from '../sim/registry.js';
import { addMixingFlags, mixingSpecFromFlags, type MixingFlags } from './mixing-flags.js';
import { simEnvFactory } from './train-commands.js';
import { ResrtError } from '../util/errors.js';
import { checkSendFrames } from '../runtime/session/camera-batch.js';
import { checkProfile, encoderFlag, inOutputFolder, parseFloatArg, parseIntArg } from './common.js';

export function registerSessionCommands(program: Command): void {
  program
    .command('learner')
    .description(
      'the learner of a fine-tuning session: ingests transitions from actors over MQTT, trains, publishes residuals',
    )
    .requiredOption('--out <dir>', 'session folder: write-ahead log, checkpoints, published residuals')
    .option('--base <file.onnx>', 'the frozen base (its dimensions size the networks)')
    .option('--broker <url>', 'use this MQTT broker (default: start one on 127.0.0.1)')
    .option('--broker-port <port>', 'port of the embedded broker', parseIntArg('--broker-port', 0), 1883)
    .option('--session <name>', 'session name (topic namespace shared with the actors)', 'default')
    .option('--profile <name>', 'auto | cpu | gpu', 'auto')
    .option('--publish-every <n>', 'publish a residual every n updates', parseIntArg('--publish-every'))
    .option('--checkpoint-every <s>', 'checkpoint every s seconds', parseIntArg('--checkpoint-every'))
    .option('--reward <mode>', 'task | rlif (interventions are the reward signal)', 'task')
    .option(
      '--encoder <mode>',
      'what the residual sees of the cameras with a camera base: base-embedding | none (default: base-embedding)',
    )
    .option('--resume', 'continue the session in --out after a crash or stop')
    .option(
      '--wal-limit <MiB>',
      'the write-ahead log (the dataset) may take this much disk; at the limit nothing more is logged (default 65536)',
      parseFloatArg('--wal-limit', 0.001, Infinity, 65536),
    )
    .option(
      '--min-free <MiB>',
      'log nothing while the disk of --out has less free: room for checkpoints and compaction (default 1024)',
      parseFloatArg('--min-free', 0, Infinity, 1024),
    )
    .option(
      '--dashboard-port <port>',
      'serve the dashboard on this port (0 picks one)',
      parseIntArg('--dashboard-port', 0, 8080),
    )
    .option('--host <addr>', 'dashboard bind address (anything but 127.0.0.1 needs --token)', '127.0.0.1')
    .option('--token <t>', 'dashboard token')
    .action(async (opts: LearnerCliOptions) => {
      checkProfile(opts.profile);
      if (opts.reward !== 'task' && opts.reward !== 'rlif')
        throw new ResrtError(`--reward ${opts.reward} is not a mode`, 'use --reward task or --reward rlif');
      // The learner service computes camera features from the base's embedding (or none).
      const config = encoderFlag(opts.encoder, undefined, ['base-embedding', 'none']);
      if (opts.resume && !hasCheckpoint(opts.out) && !existsSync(join(opts.out, 'wal')))
        throw new ResrtError(
          `nothing to resume: ${opts.out} holds no session (no checkpoint.json, no write-ahead log)`,
          'drop --resume to start a new session there, or pass the --out folder of the session to continue',
        );
      // A learner that fails to start leaves no half-made session folder.
      const isSession = (dir: string): boolean => hasCheckpoint(dir) || existsSync(join(dir, 'wal'));
      const service = await inOutputFolder(
        opts.out,
        () =>
          runLearnerService({
            outDir: opts.out,
            base: opts.base,
            brokerUrl: opts.broker,
            brokerPort: opts.brokerPort,
            session: opts.session,
            profile: opts.profile as ProfileName | 'auto',
            config,
            publishEvery: opts.publishEvery,
            checkpointEverySec: opts.checkpointEvery,
            rewardMode: opts.reward as 'task' | 'rlif',
            resume: opts.resume,
            walLimitMiB: opts.walLimit,
            minFreeMiB: opts.minFree,
            dashboardPort: opts.dashboardPort,
            host: opts.host,
            token: opts.token,
            log: (line) => console.log(line),
          }),
        isSession,
      );
      console.log(
        `learner on ${service.brokerUrl} (session ${opts.session})${service.dashboardUrl ? `, dashboard ${service.dashboardUrl}` : ''}`,
      );
      console.log('Ctrl-C checkpoints and stops.');
      await waitForSignal();
      await service.close();
    });

  const actor = program
    .command('actor')
    .description(
      'the actor of a fine-tuning session: runs base + residual through the safety layer on a robot, streams transitions',
    )
    .requiredOption('--robot-id <id>', "this robot's id in the session")
    .requiredOption('--broker <url>', 'the session broker (the learner prints it)')
    .requiredOption('--base <file.onnx>', 'the frozen base policy')
    .requiredOption('--state <dir>', 'spool and last good residual (keep it across restarts)')
    .option('--robot <url>', 'serial:/dev/ttyUSB0 or mqtt://host:port/robot-id')
    .option('--robot-config <file>', 'with --robot: the robot config file')
    .option('--virtual', 'with --robot: a resrt virtual robot (it resets its own scene)')
    .option('--task <name|path>', 'a simulated task instead of a robot')
    .option('--session <name>', 'session name', 'default')
    .option('--safety <file.json>', 'safety config')
    .option('--episodes <n>', 'stop after n episodes', parseIntArg('--episodes'))
    .option(
      '--spool-limit <MiB>',
      'no new episode while this much is unacknowledged by the learner (default 1024)',
      parseFloatArg('--spool-limit', 0.001, Infinity, 1024),
    )
    .option(
      '--min-free <MiB>',
      'no new episode while the disk of --state has less free (default 256)',
      parseFloatArg('--min-free', 0, Infinity, 256),
    )
    .option(
      '--label-timeout <ms>',
      "after a time-limit episode, wait this long for a person's success label",
      parseIntArg('--label-timeout', 0),
      0,
    )
    .option(
      '--success-detector <file.onnx>',
      "a learned success detector (resrt reward train) as the success source; a person's label overrides it",
    )
    .option(
      '--remote-estop-reset',
      'accept e-stop resets from the learner dashboard (default: only where the robot is seen)',
    )
    .option(
      '--dashboard-port <port>',
      'serve the actor dashboard on this port (0 picks one)',
      parseIntArg('--dashboard-port', 0, 8080),
    )
    .option('--host <addr>', 'dashboard bind address', '127.0.0.1')
    .option('--token <t>', 'dashboard token')
    .option(
      '--send-frames <mode>',
      "what each transition carries of the cameras: features (the base's embedding), jpeg (every frame), none",
      'none',
    )
    .option(
      '--jpeg-quality <q>',
      'with --send-frames jpeg: JPEG quality 1-100',
      parseIntArg('--jpeg-quality', 1, 85),
    )
    .option('--leader <url>', 'a leader arm for teleoperation (feetech:/dev/ttyACM1); key i toggles it')
    .option('--leader-config <file>', "with --leader: the leader arm's robot config (servo section)");
  addMixingFlags(actor, 'required with --mixing (evaluate the base on this robot)');
  actor.action(async (opts: ActorCliOptions) => {
    if (Boolean(opts.robot) === Boolean(opts.task))
      throw new ResrtError('choose --robot or --task', 'an actor drives one robot or one simulated task');
    // Without --baseline the spec says 'initial-eval', which runActor refuses with the fix.
    const mixing = mixingSpecFromFlags(opts);
    let robot: ActorOptions['robot'];
    let env: MujocoEnv | undefined;
    if (opts.robot) {
      if (!opts.robotConfig)
        throw new ResrtError(
          '--robot needs --robot-config FILE',
          'use the robot config written for this robot',
        );
      const config = loadRobotConfig(opts.robotConfig);
      robot = actorRobot({
        url: opts.robot,
        config,
        virtualScene: opts.virtual ? virtualSceneOf(config) : undefined,
      });
    }
    const successDetector = opts.successDetector
      ? await SuccessDetector.load(opts.successDetector)
      : undefined;
    // A detector trained on a camera stream of its own size (collect --detector-cameras) gets it.
    if (opts.task) env = await simEnvFactory(await loadTask(opts.task), successDetector)();
    // An actor that fails to start (a bad base, no broker) leaves no empty --state folder.
    const handle = await inOutputFolder(opts.state, () =>
      runActor({
        successDetector,
        robotId: opts.robotId,
        brokerUrl: opts.broker,
        session: opts.session,
        stateDir: opts.state,
        base: opts.base,
        robot,
        env,
        rateHz: env ? Math.round(1 / env.controlDt) : undefined,
        safety: opts.safety ? loadSafetyConfig(opts.safety) : undefined,
        episodes: opts.episodes,
        spoolLimitMiB: opts.spoolLimit,
        minFreeMiB: opts.minFree,
        labelTimeoutMs: opts.labelTimeout,
        remoteEstopReset: opts.remoteEstopReset,
        dashboardPort: opts.dashboardPort,
        host: opts.host,
        token: opts.token,
        mixing,
        sendFrames: checkSendFrames(opts.sendFrames, opts.jpegQuality),
        jpegQuality: opts.jpegQuality,
        log: (line) => console.log(line),
      }),
    );
    if (handle.dashboardUrl) console.log(`actor dashboard ${handle.dashboardUrl}`);
    const leader = opts.leader ? await openLeader(opts, handle) : null;
    const detach = process.stdin.isTTY ? attachTerminalKeys(handle) : () => {};
    if (process.stdin.isTTY)
      console.log(
        'keys: space/e e-stop, x reset e-stop, s success, f failure, p pause, r reset done, q stop',
      );
    process.once('SIGINT', () => void handle.stop());
    process.once('SIGTERM', () => void handle.stop());
    const status = await handle.done;
    detach();
    await leader?.close();
    env?.close();
    await successDetector?.close();
    console.log(`actor stopped: ${JSON.stringify(status)}`);
  });
}

/** A leader arm whose pose becomes the actor's teleop action while engaged (key i toggles). */
async function openLeader(opts: ActorCliOptions, handle: ActorHandle): Promise<LeaderArm> {
  if (!opts.leaderConfig) {
    throw new ResrtError(
      '--leader needs --leader-config FILE',
      "write the leader arm's robot config (docs/servo-bus.md)",
    );
  }
  const url = parseRobotUrl(opts.leader!);
  const config = loadRobotConfig(opts.leaderConfig);
  if (url.kind !== 'servo' || !config.servo) {
    throw new ResrtError(
      `--leader ${opts.leader} is not a servo arm with a servo config`,
      'use feetech:/dev/ttyACM1 and a config with a servo section',
    );
  }
  const followerJoints = opts.robotConfig
    ? loadRobotConfig(opts.robotConfig).action.names
    : config.action.names;
  const leader = await LeaderArm.open(url, {
    section: config.servo,
    calibration: loadCalibration(config.servo.calibration, config.servo.joints, { robotUrl: opts.leader }),
    followerJoints,
    onAction: (a) => handle.setTeleop(a),
  });
  if (process.stdin.isTTY) {
    process.stdin.on('data', (chunk: Buffer) => {
      if (chunk.toString().toLowerCase().includes('i')) {
        leader.engage(!leader.isEngaged);
        console.log(leader.isEngaged ? 'leader arm: intervening' : 'leader arm: released');
      }
    });
    console.log('key i: the leader arm takes over (again: hands back)');
  }
  return leader;
}

interface LearnerCliOptions {
  out: string;
  base?: string;
  broker?: string;
  brokerPort: number;
  session: string;
  profile: string;
  publishEvery?: number;
  checkpointEvery?: number;
  reward: string;
  encoder?: string;
  resume?: boolean;
  walLimit?: number;
  minFree?: number;
  dashboardPort?: number;
  host: string;
  token?: string;
}

interface ActorCliOptions extends MixingFlags {
  robotId: string;
  sendFrames: string;
  jpegQuality?: number;
  broker: string;
  base: string;
  state: string;
  robot?: string;
  robotConfig?: string;
  virtual?: boolean;
  task?: string;
  session: string;
  safety?: string;
  episodes?: number;
  spoolLimit?: number;
  minFree?: number;
  labelTimeout: number;
  successDetector?: string;
  remoteEstopReset?: boolean;
  dashboardPort?: number;
  host: string;
  token?: string;
  leader?: string;
  leaderConfig?: string;
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
}
