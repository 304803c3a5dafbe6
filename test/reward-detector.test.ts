// The learned success detector through real MuJoCo cameras (push-cam's "top" camera) and real
// onnxruntime: trained on a small labelled set, judged on held-out episodes, used as the success
// source of a short residual run, and refused on cameras it was not trained on.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert, ImperfectExpert, PrivilegedExpert } from '../src/sim/expert.js';
import { labelledEpisodes } from '../src/sim/reward-data.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import {
  trainSuccessDetector,
  type DetectorEpisode,
  type DetectorResult,
} from '../src/residual/reward-detector.js';
import {
  chooseThreshold,
  detectorMetrics,
  type DetectorMetrics,
  type EpisodeScores,
} from '../src/residual/reward-detector-verdict.js';
import { evaluateDetector } from '../src/residual/reward-detector-eval.js';
import { trainResidual } from '../src/residual/trainer.js';
import { detectorAgreement } from '../src/residual/trainer-report.js';
import { detectorAgreementLines } from '../src/cli/train-commands.js';
import { detectorOutcome, SuccessDetector, type SuccessJudge } from '../src/runtime/success-detector.js';
import { exportMlpToOnnx } from '../src/runtime/onnx-export.js';
import type { CameraSpec } from '../src/types.js';

const noisy = { jitterStd: 0.06, biasStd: 0.1, pauseProbability: 0.02, maxPauseSteps: 5 };

describe('success detector', () => {
  let dir: string;
  let result: DetectorResult;
  let detectorPath: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'resrt-detector-test-'));
    const ok = join(dir, 'ok.jsonl');
    const bad = join(dir, 'noisy.jsonl');
    await collectDemos({ task: pushCamTask, episodes: 16, out: ok, seed: 0, noise: cleanExpert });
    await collectDemos({ task: pushCamTask, episodes: 16, out: bad, seed: 500, noise: noisy });
    const data = labelledEpisodes(
      [ok, bad].map((path) => ({ path, demos: readDemos(path) })),
      ['top'],
    );
    expect(data.episodes.filter((e) => e.success).length).toBeGreaterThanOrEqual(16);
    expect(data.episodes.filter((e) => !e.success).length).toBeGreaterThanOrEqual(6);
    result = await trainSuccessDetector(data, {
      steps: 200,
      batchSize: 32,
      validationFraction: 0.25,
      testFraction: 0.25,
      threads: 1,
      device: 'cpu',
    });
    detectorPath = join(dir, 'detector.onnx');
    writeFileSync(detectorPath, result.onnx);
  }, 240_000);

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('tells success from failure on held-out episodes, and its export matches the engine', () => {
    const held = [result.validation, result.test];
    const right = held.reduce((s, m) => s + m.truePositives + m.trueNegatives, 0);
    const all = held.reduce((s, m) => s + m.episodes, 0);
    expect(all).toBeGreaterThanOrEqual(12);
    // Chance (always "success") is ~70% here; a detector that learned nothing cannot pass.
    expect(right / all).toBeGreaterThanOrEqual(0.85);
    expect(result.test.truePositives).toBeGreaterThan(0);
    expect(result.threshold).toBeGreaterThan(0);
    expect(result.threshold).toBeLessThan(1);
    expect(result.exportMaxAbsError).toBeLessThanOrEqual(1e-4);
  });

  it('loads with its cameras and threshold, and judges frames from the simulator', async () => {
    const env = await MujocoEnv.create(pushCamTask);
    const detector = await SuccessDetector.load(detectorPath, env.cameras);
    try {
      expect(detector.cameras).toEqual([{ name: 'top', width: 84, height: 84 }]);
      expect(detector.threshold).toBeCloseTo(result.threshold, 6);
      const first = env.reset({ seed: 3 });
      const verdict = await detector.judge(first.frames);
      expect(verdict.probability).toBeGreaterThanOrEqual(0);
      expect(verdict.probability).toBeLessThanOrEqual(1);
      expect(verdict.success).toBe(verdict.probability >= detector.threshold);
    } finally {
      await detector.close();
      env.close();
    }
  });

  it('refuses cameras it was not trained on, missing frames and files that are not detectors', async () => {
    const other: CameraSpec[] = [{ name: 'wrist', width: 84, height: 84, channels: 3, depth: false }];
    await expect(SuccessDetector.load(detectorPath, other)).rejects.toThrow(
      /trained on camera "top", which is not here[\s\S]*fix: .*resrt reward train --data/,
    );
    const small: CameraSpec[] = [{ name: 'top', width: 64, height: 64, channels: 3, depth: false }];
    await expect(SuccessDetector.load(detectorPath, small)).rejects.toThrow(
      /trained on 84x84 RGB frames of camera "top", and here it gives 64x64x3[\s\S]*fix: set camera "top" to 84x84/,
    );
    const detector = await SuccessDetector.load(detectorPath);
    try {
      await expect(detector.judge(undefined)).rejects.toThrow(
        /reads camera "top" and this observation has no frame/,
      );
      const frame = {
        width: 42,
        height: 42,
        channels: 3,
        data: new Uint8Array(42 * 42 * 3),
        capturedAtMs: 0,
        seq: 0,
      };
      await expect(detector.judge({ top: frame })).rejects.toThrow(/trained on 84x84 frames of camera "top"/);
    } finally {
      await detector.close();
    }
    const policy = join(dir, 'policy.onnx');
    writeFileSync(
      policy,
      exportMlpToOnnx({
        inputs: [{ name: 'obs', dim: 2 }],
        layers: [
          {
            inDim: 2,
            outDim: 1,
            weight: new Float32Array(2),
            bias: new Float32Array(1),
            activation: 'linear',
          },
        ],
        output: { name: 'action', actionDim: 1, chunkLength: 1 },
        metadata: { 'resrt.kind': 'base' },
      }),
    );
    await expect(SuccessDetector.load(policy)).rejects.toThrow(
      /is not a success detector \(its resrt.kind is "base"\)/,
    );
  });

  it('needs both outcomes in the data, and names how to get the missing one', async () => {
    const ok = join(dir, 'ok.jsonl');
    const data = labelledEpisodes([{ path: ok, demos: readDemos(ok) }], 'auto');
    await expect(trainSuccessDetector(data, { steps: 1 })).rejects.toThrow(
      /0 failed episodes[\s\S]*fix: .*resrt collect --task TASK .*--bias/,
    );
  });

  it('is the success source of a residual run, with the true success logged beside it', async () => {
    const detector = await SuccessDetector.load(detectorPath);
    // The privileged expert as the base, reading whichever env (training or evaluation) last reset.
    let current: MujocoEnv | null = null;
    const expert = new ImperfectExpert(pushCamTask.expert!(), 3, cleanExpert, 0);
    const base = new PrivilegedExpert(expert, () => (current as MujocoEnv).expertObservation());
    const run = (judge: SuccessJudge, out: string): ReturnType<typeof trainResidual> =>
      trainResidual({
        makeEnv: async () => {
          const env = await MujocoEnv.create(pushCamTask);
          const reset = env.reset.bind(env);
          env.reset = (o) => {
            current = env;
            return reset(o);
          };
          return env;
        },
        base,
        steps: 200,
        outDir: join(dir, out),
        worker: false,
        evalEpisodes: 1,
        device: 'cpu',
        threads: 1,
        log: () => {},
        successDetector: judge,
        // The expert on its own: no residual noise before learning starts.
        // A state-only base: the residual reads the state (no base embedding to read).
        config: { warmupNoise: 0, learningStarts: 10_000, encoder: 'none' },
      });
    try {
      const r = await run(detector, 'run');
      expect(r.trainEpisodes.length).toBeGreaterThanOrEqual(4);
      for (const e of r.trainEpisodes) expect(typeof e.trueSuccess).toBe('boolean');
      expect(r.trainEpisodes.some((e) => e.success)).toBe(true);
      // The same detector made never to fire: the clean expert still succeeds, and no training
      // episode counts it, so the success really comes from the detector.
      const never: SuccessJudge = {
        cameras: detector.cameras,
        threshold: detector.threshold,
        judge: async (frames) => ({ ...(await detector.judge(frames)), success: false }),
      };
      const silent = await run(never, 'silent');
      expect(silent.trainEpisodes.every((e) => !e.success)).toBe(true);
      expect(silent.trainEpisodes.filter((e) => e.trueSuccess).length).toBeGreaterThanOrEqual(3);
      // summary.json says how often the detector and the task called the episodes successful: here
      // the silenced detector never did while the task did, which is what the CLI warns about the
      // other way round (a detector calling far more successes than the task).
      const summary = (out: string): { successDetector?: unknown } =>
        JSON.parse(readFileSync(join(dir, out, 'summary.json'), 'utf8'));
      const n = silent.trainEpisodes.length;
      const taskWins = silent.trainEpisodes.filter((e) => e.trueSuccess).length;
      expect(summary('silent').successDetector).toEqual({
        episodes: n,
        detectorSuccess: 0,
        taskSuccess: taskWins / n,
        agreement: (n - taskWins) / n,
      });
      expect(summary('run').successDetector).toEqual(detectorAgreement(r.trainEpisodes));
      expect(detectorAgreement(r.trainEpisodes.map(({ trueSuccess: _, ...e }) => e))).toBeNull();
    } finally {
      await detector.close();
    }
  }, 120_000);

  it('turns a verdict into the step the learner stores', () => {
    const yes = { probability: 0.9, success: true };
    const no = { probability: 0.1, success: false };
    const running = { reward: 0, terminated: false, truncated: false, envSuccess: false };
    expect(detectorOutcome(running, yes)).toEqual({
      reward: 1,
      terminated: true,
      truncated: false,
      success: true,
    });
    expect(detectorOutcome(running, no)).toEqual({
      reward: 0,
      terminated: false,
      truncated: false,
      success: false,
    });
    // The env ended on its own success that the detector does not see: cut, not a failure.
    const envWin = { reward: 1, terminated: true, truncated: false, envSuccess: true };
    expect(detectorOutcome(envWin, no)).toEqual({
      reward: 0,
      terminated: false,
      truncated: true,
      success: false,
    });
    // A failure the env reports stays terminal.
    const envFail = { reward: 0, terminated: true, truncated: false, envSuccess: false };
    expect(detectorOutcome(envFail, no)).toEqual({
      reward: 0,
      terminated: true,
      truncated: false,
      success: false,
    });
  });
});

describe('success detector verdicts and threshold', () => {
  // success: the label; max: the highest P(success) over the episode's observations (what the
  // verdict uses); final: the last observation's.
  const ep = (success: boolean, max: number, final = max): EpisodeScores => ({ success, max, final });

  it('judges an episode by its most success-like observation, not its last', () => {
    const scores = [
      ep(true, 0.9),
      ep(true, 0.3), // missed
      ep(false, 0.8, 0.1), // the puck passed near the goal: fired mid-episode
      ep(false, 0.2),
      ep(false, 0.1),
    ];
    const m = detectorMetrics(scores, 0.5);
    expect([m.truePositives, m.falsePositives, m.trueNegatives, m.falseNegatives]).toEqual([1, 1, 2, 1]);
    expect(m.accuracy).toBeCloseTo(3 / 5, 12);
    expect(m.precision).toBeCloseTo(1 / 2, 12);
    expect(m.recall).toBeCloseTo(1 / 2, 12);
    // The final observations alone: 0.9, 0.3, 0.1, 0.2, 0.1 against 0.5 get 4 of 5 right.
    expect(m.finalFrameAccuracy).toBeCloseTo(4 / 5, 12);
    expect(Number.isNaN(detectorMetrics([ep(false, 0.1)], 0.5).precision)).toBe(true);
  });

  it('measures a detector on labelled episodes as train and actor judge with it (reward eval)', async () => {
    // Each 1x1 frame's red level is the probability the scripted detector answers (/ 255).
    const episode = (name: string, success: boolean, levels: number[]): DetectorEpisode => ({
      name,
      success,
      load: () => [
        {
          width: 1,
          height: 1,
          count: levels.length,
          data: Uint8Array.from(levels.flatMap((v) => [v, 0, 0])),
        },
      ],
    });
    const judge: SuccessJudge = {
      cameras: [{ name: 'top', width: 1, height: 1 }],
      threshold: 0.5,
      judge: async (frames) => {
        const p = frames!.top.data[0] / 255;
        return { probability: p, success: p >= 0.5 };
      },
    };
    const cameras = [{ name: 'top', width: 1, height: 1 }];
    const result = await evaluateDetector(judge, [
      {
        name: 'a.jsonl',
        cameras,
        // Observation 0 (the reset) fires but is never judged; a success seen only mid-episode counts.
        episodes: [episode('a0', false, [255, 10, 20]), episode('a1', true, [0, 200, 30])],
      },
      {
        name: 'b.jsonl',
        cameras,
        episodes: [episode('b0', false, [0, 180, 0]), episode('b1', true, [0, 0, 10])],
      },
    ]);
    expect(result.observations).toBe(8);
    const counts = (m: DetectorMetrics): number[] => [
      m.truePositives,
      m.falsePositives,
      m.trueNegatives,
      m.falseNegatives,
    ];
    expect(result.bySource.map((s) => [s.source, counts(s.metrics)])).toEqual([
      ['a.jsonl', [1, 0, 1, 0]],
      ['b.jsonl', [0, 1, 0, 1]],
    ]);
    expect(counts(result.all)).toEqual([1, 1, 1, 1]);
    // Final frames: a0 20, a1 30, b0 0, b1 10 against 127.5: the failures right, the successes wrong.
    expect(result.all.finalFrameAccuracy).toBe(0.5);
    await expect(
      evaluateDetector({ ...judge, cameras: [{ name: 'top', width: 2, height: 2, mjcfCamera: 'top' }] }, [
        { name: 'c.jsonl', cameras, episodes: [] },
      ]),
    ).rejects.toThrow(
      /reads camera "top" at 2x2, and c.jsonl records it at 1x1[\s\S]*--detector-cameras top@2x2/,
    );
  });

  it('chooses the threshold on episode verdicts, in the middle of the best range on the logit scale', () => {
    // A failure fires at 0.75 mid-episode though its last frame is 0.05: judged per final frame,
    // any threshold above 0.05 would look right for it; judged per episode it must be above 0.75.
    const scores = [ep(true, 0.95), ep(true, 0.9), ep(false, 0.75, 0.05), ep(false, 0.2)];
    const th = chooseThreshold(scores);
    expect(th).toBeGreaterThan(0.75);
    expect(th).toBeLessThan(0.9);
    const logit = (p: number): number => Math.log(p / (1 - p));
    expect(logit(th)).toBeCloseTo((logit(0.75) + logit(0.9)) / 2, 6);
    expect(detectorMetrics(scores, th).accuracy).toBe(1);
    // Overlapping classes: the best achievable accuracy (5 of 6 here), not a per-frame optimum.
    const mixed = [
      ep(true, 0.9),
      ep(true, 0.8),
      ep(true, 0.4),
      ep(false, 0.6),
      ep(false, 0.3),
      ep(false, 0.1),
    ];
    // 5 of 6 is reached between 0.3 and 0.4 (one FP) and between 0.6 and 0.8 (one FN), not in
    // between (both); equally balanced, so the higher range: fewer false rewards.
    const mixedTh = chooseThreshold(mixed);
    expect(detectorMetrics(mixed, mixedTh).accuracy).toBeCloseTo(5 / 6, 12);
    expect(mixedTh).toBeGreaterThan(0.6);
    expect(mixedTh).toBeLessThan(0.8);
    // Equal accuracy (3 of 5) firing above 0.1 (one FN, one FP) or never: the balanced accuracy
    // prefers a detector that finds half the successes to one that finds none.
    const never = [ep(true, 0.1), ep(true, 0.4), ep(false, 0.1), ep(false, 0.1), ep(false, 0.8)];
    const neverTh = chooseThreshold(never);
    expect(neverTh).toBeGreaterThan(0.1);
    expect(neverTh).toBeLessThan(0.4);
  });

  it('tells the user of `train --success-detector` how far the detector and the task agree, and what to do when it runs ahead', () => {
    expect(detectorAgreementLines(null, null)).toEqual([]);
    const close = { episodes: 40, detectorSuccess: 0.5, taskSuccess: 0.35, agreement: 0.85 };
    expect(detectorAgreementLines(close, 'resrt collect …')).toEqual([
      'success detector: 50.0% of 40 training episodes called successful, by the task 35.0% (they agree on 85.0%)',
    ]);
    const ahead = { episodes: 255, detectorSuccess: 0.596, taskSuccess: 0.184, agreement: 0.588 };
    const sim = detectorAgreementLines(
      ahead,
      'resrt collect --task push-cam --base b.onnx --residual r.onnx --out rollouts.jsonl',
    );
    expect(sim).toHaveLength(2);
    expect(sim[1]).toMatch(/^warning: the detector calls far more episodes successful than the task/);
    expect(sim[1]).toContain(
      '`resrt collect --task push-cam --base b.onnx --residual r.onnx --out rollouts.jsonl`',
    );
    // On a robot there is no simulator to collect in: a person's labels are the data.
    expect(detectorAgreementLines(ahead, null)[1]).toContain('labelled by a person');
  });

  it('pools files of one task, and says how to name the task of an imported session', () => {
    const set = (task: string): DemoSet => ({
      header: {
        format: 'resrt-demos',
        version: 1,
        task,
        obsDim: 1,
        actionDim: 1,
        obsNames: ['x'],
        actionNames: ['a'],
        controlDt: 0.04,
        createdAt: '',
        source: 'test',
        cameras: [{ name: 'top', width: 84, height: 84, channels: 3, depth: false }],
      },
      episodes: [],
      tornTail: false,
    });
    const pooled = [
      { path: 'ok.jsonl', demos: set('push-cam') },
      { path: 'labelled.jsonl', demos: set('session') },
    ];
    expect(() => labelledEpisodes(pooled, ['top'])).toThrow(
      /labelled\.jsonl records task session, ok\.jsonl task push-cam[\s\S]*resrt import session DIR --out FILE --task T/,
    );
    expect(() => labelledEpisodes([pooled[0], { path: 'b.jsonl', demos: set('push') }], ['top'])).toThrow(
      /train a detector on episodes of one task/,
    );
  });
});
