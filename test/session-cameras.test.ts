// Sessions with cameras (issue 20, item 4), through real MuJoCo push-cam with its top camera, a real
// onnxruntime visuomotor base with an embedding output, a real broker and the learner as a child
// process killed with SIGKILL: one actor streams the base's features per transition, one streams
// JPEG frames; the learner's replay holds [features | state] rows (JPEG: the learner's own features
// of the decoded frames, within JPEG tolerance of the actor's), its log holds every transition
// exactly once across the kill, and both dashboards serve each robot's latest frame as a JPEG.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startEmbeddedBroker } from '../src/util/mqtt-broker.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { MujocoEnv } from '../src/sim/env.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import type { LearnerServiceOptions } from '../src/residual/service/service-options.js';
import { decodeBatch, encodeBatch, type SessionTransition } from '../src/runtime/session/codec.js';
import type { CameraFrames, Policy } from '../src/types.js';
import { decodeImage, encodeRgbJpeg } from '../src/util/image-codec.js';
import { CameraIngest } from '../src/residual/service/camera-ingest.js';
import { CameraSender } from '../src/runtime/session/camera-sender.js';
import { checkSendFrames } from '../src/runtime/session/camera-batch.js';
import { smallLearner, waitFor } from './session-fixtures.js';
import { spawnLearner as spawnChildLearner, type ChildLearner } from './learner-kills.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';
import { launchChromium } from './fixtures/chromium.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';
import { loadEpisodeFrames, readDemos } from '../src/sim/demos.js';
import { labelledEpisodes } from '../src/sim/reward-data.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const O = 12;
const A = 3;
const E = 8;
const key = (a: ArrayLike<number>): string => Array.from(a, (v) => Math.fround(v)).join(',');

/** The base the actor acts with, remembering the embedding (and top frame) of every state it acted on. */
function recordingBase(
  base: OnnxPolicy,
  seen: Map<string, Float32Array>,
  seenFrames: Map<string, Uint8Array>,
): Policy {
  return {
    actionDim: base.actionDim,
    embeddingDim: base.embeddingDim,
    get lastEmbedding() {
      return base.lastEmbedding;
    },
    async act(obs: Float32Array, frames?: CameraFrames) {
      const a = await base.act(obs, frames);
      seen.set(key(obs), Float32Array.from(base.lastEmbedding!));
      if (frames?.top) seenFrames.set(key(obs), Uint8Array.from(frames.top.data));
      return a;
    },
  } as Policy;
}

async function spawnLearner(options: LearnerServiceOptions): Promise<ChildLearner> {
  const learner = await spawnChildLearner(options);
  cleanups.push(() => learner.kill());
  return learner;
}

/** Waits for an asynchronous condition (an HTTP answer). */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function dashboardOf(learner: ChildLearner): Promise<string> {
  const line = (): string | undefined => learner.lines.find((l) => l.startsWith('dashboard: '));
  await waitFor("the learner's dashboard", () => line() !== undefined, 30_000);
  return line()!.slice('dashboard: '.length).replace(/\/$/, '');
}

async function fetchJpeg(url: string): Promise<{ width: number; height: number } | null> {
  const res = await fetch(url);
  if (res.status !== 200) return null;
  expect(res.headers.get('content-type')).toBe('image/jpeg');
  return decodeImage(new Uint8Array(await res.arrayBuffer()), url);
}

describe('session cameras', () => {
  it('features and JPEG actors feed the learner [features | state]; kill -9 loses and duplicates nothing; dashboards serve the latest frames', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-camsession-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const basePath = join(dir, 'base.onnx');
    writeFileSync(basePath, visuomotorOnnx({ state: O, image: 84, actions: A, chunk: 1, embedding: E }));
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const outDir = join(dir, 'learner');
    const learnerOptions: LearnerServiceOptions = {
      outDir,
      brokerUrl: broker.url,
      session: 'cams',
      base: basePath,
      profile: 'cpu',
      config: { ...smallLearner, learningStarts: 150 },
      publishEvery: 10,
      checkpointEverySec: 1,
      dashboardPort: 0,
    };
    let learner = await spawnLearner(learnerOptions);

    const modes = { feat: 'features', jpeg: 'jpeg' } as const;
    const seen = new Map<string, Map<string, Float32Array>>();
    const seenFrames = new Map<string, Uint8Array>();
    const actors: ActorHandle[] = [];
    for (const [index, [robotId, sendFrames]] of Object.entries(modes).entries()) {
      const env = await MujocoEnv.create(pushCamTask, { maxEpisodeSteps: 40, seed: index + 1 });
      cleanups.push(() => env.close());
      const base = await OnnxPolicy.load(basePath, { cameras: { top: { width: 84, height: 84 } } });
      cleanups.push(() => base.close());
      seen.set(robotId, new Map());
      const actor = await runActor({
        robotId,
        brokerUrl: broker.url,
        session: 'cams',
        stateDir: join(dir, robotId),
        base: recordingBase(base, seen.get(robotId)!, seenFrames),
        env,
        sendFrames,
        jpegQuality: 90,
        seed: index + 1,
        resendMs: 500,
        dashboardPort: 0,
      });
      cleanups.push(() => actor.stop());
      actors.push(actor);
    }

    // Both dashboards show each robot's latest camera frame.
    for (const actor of actors) {
      const url = `${actor.dashboardUrl!.replace(/\/$/, '')}/frame/${actor.robotId}/top.jpg`;
      let frame: { width: number; height: number } | null = null;
      await until(`${actor.robotId}'s frame`, async () => (frame = await fetchJpeg(url)) !== null, 30_000);
      expect(frame).toMatchObject({ width: 84, height: 84 });
      expect(
        (await fetch(`${actor.dashboardUrl!.replace(/\/$/, '')}/frame/${actor.robotId}/side.jpg`)).status,
      ).toBe(404);
    }
    const learnerDashboard = await dashboardOf(learner);
    for (const robotId of Object.keys(modes)) {
      let frame: { width: number; height: number } | null = null;
      const url = `${learnerDashboard}/frame/${robotId}/top.jpg`;
      await until(
        `${robotId}'s frame on the learner`,
        async () => (frame = await fetchJpeg(url)) !== null,
        30_000,
      );
      expect(frame).toMatchObject({ width: 84, height: 84 });
    }

    // The pages: each robot's latest frame as an image, on the learner's page and on an actor's.
    const chrome = await launchChromium();
    cleanups.push(() => chrome.close());
    const browser = chrome.browser;
    const page = await browser.newPage();
    const shown = (testId: string): Promise<unknown> =>
      // A string runs in the page (the tests are typechecked without the DOM's types).
      page.waitForFunction(
        `(() => {
          const img = document.querySelector('[data-testid="${testId}"]');
          return !!img && img.complete && img.naturalWidth === 84 && img.naturalHeight === 84;
        })()`,
        undefined,
        { timeout: 30_000 },
      );
    await page.goto(`${learnerDashboard}/`);
    await shown('frame-feat-top');
    await shown('frame-jpeg-top');
    await page.goto(actors[0].dashboardUrl!);
    await shown(`frame-${actors[0].robotId}-top`);
    expect(await page.locator('#cameras img').count()).toBe(1);

    // kill -9 once both actors have transitions acknowledged, then resume; the actors go on.
    await waitFor('acknowledged transitions', () => actors.every((a) => a.status().ackedSeq >= 30), 40_000);
    learner.kill();
    await learner.exited;
    const before = actors.map((a) => a.status().transitions);
    learner = await spawnLearner({ ...learnerOptions, resume: true });
    await waitFor(
      'transitions after the restart, acknowledged',
      // …and each acts with a camera residual the learner trained on [features | state] and sent.
      () =>
        actors.every(
          (a, i) =>
            a.status().ackedSeq >= before[i] + 40 &&
            a.status().episodes >= 2 &&
            a.status().residualVersion >= 1,
        ),
      60_000,
    );
    // A person's verdict on the JPEG robot: it ends the episode at the next step, as a success.
    const episodesBefore = actors[1].status().episodes;
    actors[1].label(true);
    await waitFor('the labelled episode to end', () => actors[1].status().episodes > episodesBefore, 30_000);
    for (const a of actors) a.pause();
    await waitFor(
      'every transition acknowledged',
      () => actors.every((a) => a.status().pendingTransitions === 0),
      30_000,
    );
    const done = [];
    for (const a of actors) done.push(await a.stop());
    expect(done.map((s) => s.cameraStepsMissing)).toEqual([0, 0]);
    expect(done.map((s) => s.pendingTransitions)).toEqual([0, 0]);
    learner.child.kill('SIGTERM');
    expect(await learner.exited).toBe(0);

    // The log: every robot's seqs exactly 0 … n−1, every transition with its camera payload.
    const seqs = new Map<string, number[]>();
    /** Per robot, the logged transitions up to its last episode end (the replay holds those). */
    const inEpisodes = new Map<string, number>();
    const payloads = new Map<string, Set<string>>();
    const wal = TransitionWal.open(join(outDir, 'wal'), {
      transitions: (b) => {
        if (!seqs.has(b.robotId)) seqs.set(b.robotId, []);
        seqs.get(b.robotId)!.push(...b.transitions.map((t) => t.seq));
        if (!payloads.has(b.robotId)) payloads.set(b.robotId, new Set());
        for (const t of b.transitions) {
          payloads.get(b.robotId)!.add(t.camera?.obs.kind ?? 'missing');
          if (t.terminated || t.truncated) inEpisodes.set(b.robotId, t.seq + 1);
        }
      },
      episode: () => {},
    });
    await wal.close();
    for (const s of done) {
      const got = seqs.get(s.robotId) ?? [];
      expect(got.length).toBe(s.transitions);
      expect(got.every((seq, i) => seq === i)).toBe(true);
    }
    expect(payloads.get('feat')).toEqual(new Set(['features']));
    expect(payloads.get('jpeg')).toEqual(new Set(['jpeg']));

    // The replay: [features | state] per row, every logged transition once (all episodes ended).
    const replay = readCheckpoint(outDir)!.online;
    const W = E + O;
    expect(replay.size).toBe(inEpisodes.get('feat')! + inEpisodes.get('jpeg')!);
    let exact = 0;
    let close = 0;
    let worst = 0;
    let sumDiff = 0;
    let sumSpread = 0;
    let first: Float32Array | null = null;
    /** Which actor a row ([features | state]) came from: 'feat' (exact), 'jpeg' (close), 'zeros'. */
    const judge = (row: Float32Array, what: string): 'feat' | 'jpeg' | 'zeros' => {
      const features = row.subarray(0, E);
      const state = key(row.subarray(E));
      const fromFeat = seen.get('feat')!.get(state);
      if (fromFeat && features.every((v, i) => v === fromFeat[i])) return 'feat';
      // After termination the base is not queried: zeros, as the trainer stores them.
      if (features.every((v) => v === 0)) return 'zeros';
      const fromJpeg = seen.get('jpeg')!.get(state);
      expect(fromJpeg, `${what}: its state was acted on by neither actor`).toBeDefined();
      const diffs = Array.from(features, (v, i) => Math.abs(v - fromJpeg![i]));
      worst = Math.max(worst, ...diffs);
      sumDiff += diffs.reduce((x, y) => x + y, 0) / E;
      if (first)
        sumSpread += Array.from(features, (v, i) => Math.abs(v - first![i])).reduce((x, y) => x + y, 0) / E;
      else first = Float32Array.from(features);
      close++;
      return 'jpeg';
    };
    for (let r = 0; r < replay.size; r++) {
      const from = judge(replay.obs.subarray(r * W, (r + 1) * W), `row ${r}`);
      expect(from).not.toBe('zeros');
      if (from === 'feat') exact++;
      const next = judge(replay.nextObs.subarray(r * W, (r + 1) * W), `row ${r}'s next observation`);
      if (next === 'zeros')
        expect(replay.flags[r] & 1, `row ${r}: zero next features without termination`).toBe(1);
      else expect(next, `row ${r}: next observation from the other actor`).toBe(from);
    }
    expect(exact).toBe(inEpisodes.get('feat'));
    expect(replay.size - exact).toBe(inEpisodes.get('jpeg'));
    // JPEG at quality 90 moves the tanh features a little (measured: mean 0.015, worst 0.066-0.083),
    // far less than they move between observations (mean 0.24 from the first row): features of the
    // wrong frame or step would fail this.
    const meanDiff = sumDiff / close;
    expect(worst).toBeGreaterThan(0);
    expect(worst).toBeLessThan(0.25);
    expect(meanDiff).toBeLessThan(0.05);
    expect(meanDiff).toBeLessThan(sumSpread / (close - 1) / 5);

    // The session as detector data: the labelled episode, with the frames of every observation
    // (the terminal one too), as `resrt reward train` reads them.
    const labelledFile = join(dir, 'labelled.jsonl');
    const printed = await resrtInProcess(
      'import',
      'session',
      outDir,
      '--out',
      labelledFile,
      '--labelled-only',
      '--task',
      'push-cam',
    );
    const finished = done[0].episodes + done[1].episodes;
    expect(printed).toContain(`left out: ${finished - 1} episodes no person labelled`);
    expect(printed).toMatch(
      /imported 1 episodes \(\d+ steps, 1 successful\) from session .*cameras top 84x84/,
    );
    const demos = readDemos(labelledFile);
    expect(demos.header).toMatchObject({
      task: 'push-cam',
      cameras: [{ name: 'top', width: 84, height: 84 }],
    });
    const [ep] = demos.episodes;
    expect(ep).toMatchObject({ success: true, terminated: true, truncated: false });
    expect(ep.rewards.at(-1)).toBe(1);
    const frames = loadEpisodeFrames(demos, ep);
    expect(frames).toHaveLength(ep.obs.length);
    // Each observation's frame is the one the base acted on, through JPEG at quality 90.
    for (let t = 0; t < ep.actions.length; t++) {
      const acted = seenFrames.get(key(ep.obs[t]));
      expect(acted, `observation ${t} was acted on`).toBeDefined();
      const got = frames[t].top.data;
      let diff = 0;
      for (let i = 0; i < got.length; i++) diff += Math.abs(got[i] - acted![i]);
      expect(diff / got.length).toBeLessThan(4);
    }
    expect(frames.at(-1)!.top).toMatchObject({ width: 84, height: 84 });
    const stores = labelledEpisodes([{ path: labelledFile, demos }], ['top']).episodes[0].load();
    expect(stores[0].count).toBe(ep.obs.length);
    // Without --labelled-only: every finished episode of the JPEG robot.
    const allFile = join(dir, 'all.jsonl');
    const printedAll = await resrtInProcess('import', 'session', outDir, '--out', allFile);
    expect(printedAll).toContain(
      `left out: ${done[0].episodes} episodes without frames of every observation`,
    );
    expect(readDemos(allFile).episodes).toHaveLength(done[1].episodes);
  }, 120_000);
});

describe('transition batches with cameras', () => {
  const step = (seq: number, stepInEp: number, camera?: SessionTransition['camera']): SessionTransition => ({
    robotId: 'r',
    seq,
    episode: 1,
    step: stepInEp,
    obs: new Float32Array(2).fill(seq),
    baseAction: new Float32Array(1),
    residual: new Float32Array(1),
    action: new Float32Array(1),
    reward: 0,
    nextObs: new Float32Array(2).fill(seq + 1),
    nextBaseAction: new Float32Array(1),
    terminated: false,
    truncated: false,
    intervention: false,
    safetyEvents: 0,
    policyVersion: 0,
    success: false,
    labelled: false,
    ...(camera ? { camera } : {}),
  });
  const f = (v: number) => ({ kind: 'features' as const, features: Float32Array.of(v, v + 0.5) });
  const j = (v: number) => ({ kind: 'jpeg' as const, jpeg: { top: Uint8Array.of(0xff, 0xd8, 0xff, v) } });

  it('round-trips features and JPEG payloads, sends an observation payload once, keeps format 1 without cameras', () => {
    const chain = (p: (v: number) => ReturnType<typeof f> | ReturnType<typeof j>) => {
      const a = p(0);
      const b = p(1);
      const c = p(2);
      return [
        step(5, 0, { obs: a, next: b }),
        step(6, 1, { obs: b, next: c }),
        step(7, 2, { obs: c, next: null }),
      ];
    };
    for (const p of [f, j]) {
      const transitions = chain(p);
      const bytes = encodeBatch({ robotId: 'r', obsDim: 2, actionDim: 1, firstSeq: 5, transitions });
      expect(bytes[4]).toBe(2);
      const back = decodeBatch(bytes);
      expect(back.transitions.map((t) => t.camera)).toEqual(transitions.map((t) => t.camera));
      // Three payloads travel, not five: each observation's is the previous step's next.
      const one = encodeBatch({
        robotId: 'r',
        obsDim: 2,
        actionDim: 1,
        firstSeq: 7,
        transitions: [transitions[2]],
      });
      const perPayload = 8;
      expect(bytes.byteLength - one.byteLength).toBe(2 * (recordBytes + 1) + 2 * perPayload);
    }
    const plain = encodeBatch({
      robotId: 'r',
      obsDim: 2,
      actionDim: 1,
      firstSeq: 0,
      transitions: [step(0, 0)],
    });
    expect(plain[4]).toBe(1);
    expect(decodeBatch(plain).transitions[0].camera).toBeUndefined();
  });

  it('a step without camera data decodes as such; mixed modes and cut bytes are refused by name', () => {
    const mixed = [step(0, 0, { obs: f(0), next: f(1) }), step(1, 1), step(2, 2, { obs: f(2), next: null })];
    const back = decodeBatch(
      encodeBatch({ robotId: 'r', obsDim: 2, actionDim: 1, firstSeq: 0, transitions: mixed }),
    );
    expect(back.transitions.map((t) => !!t.camera)).toEqual([true, false, true]);
    expect(back.transitions[2].camera!.obs).toEqual(f(2));
    expect(() =>
      encodeBatch({
        robotId: 'r',
        obsDim: 2,
        actionDim: 1,
        firstSeq: 0,
        transitions: [step(0, 0, { obs: f(0), next: null }), step(1, 1, { obs: j(1), next: null })],
      }),
    ).toThrow(/camera payloads differ inside one batch/);
    const bytes = encodeBatch({ robotId: 'r', obsDim: 2, actionDim: 1, firstSeq: 0, transitions: mixed });
    expect(() => decodeBatch(bytes.subarray(0, bytes.byteLength - 9))).toThrow(/transition batch/);
  });
});

/** One record's fixed part for O = 2, A = 1 (codec.ts). */
const recordBytes = 20 + 4 * (2 * 2 + 4 * 1);

describe('camera data the learner cannot use', () => {
  let dir = '';
  let basePath = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'resrt-camingest-'));
    basePath = join(dir, 'base.onnx');
    writeFileSync(basePath, visuomotorOnnx({ state: O, image: 84, actions: A, chunk: 1, embedding: E }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const frame = (v: number) => ({
    kind: 'jpeg' as const,
    jpeg: { top: encodeRgbJpeg({ width: 84, height: 84, data: new Uint8Array(84 * 84 * 3).fill(v) }) },
  });
  const step = (s: number, camera?: SessionTransition['camera']): SessionTransition => ({
    robotId: 'r',
    seq: s,
    episode: 0,
    step: s,
    obs: new Float32Array(O).fill(s),
    baseAction: new Float32Array(A),
    residual: new Float32Array(A),
    action: new Float32Array(A),
    reward: 0,
    nextObs: new Float32Array(O).fill(s + 1),
    nextBaseAction: new Float32Array(A),
    terminated: s === 1,
    truncated: false,
    intervention: false,
    safetyEvents: 0,
    policyVersion: 0,
    success: false,
    labelled: false,
    ...(camera ? { camera } : {}),
  });

  it('refuses batches of another feature width or without a camera the base reads, counts steps without camera data, and computes JPEG features with the base', async () => {
    const ingest = new CameraIngest(await OnnxPolicy.load(basePath, { warmupRuns: 0 }), () => {});
    try {
      const batch = (transitions: SessionTransition[]) =>
        decodeBatch(encodeBatch({ robotId: 'r', obsDim: O, actionDim: A, firstSeq: 0, transitions }));
      const f5 = { kind: 'features' as const, features: new Float32Array(5) };
      expect(() => ingest.check(batch([step(0, { obs: f5, next: f5 })]))).toThrow(
        /r sends 5 camera features, the learner's base embeds 8[\s\S]*same base/,
      );
      const side = { kind: 'jpeg' as const, jpeg: { side: frame(1).jpeg.top } };
      expect(() => ingest.check(batch([step(0, { obs: side, next: side })]))).toThrow(
        /frames of side, the base also reads top/,
      );
      const got: (SessionTransition[] | null)[] = [];
      ingest.enqueue([step(0, { obs: frame(10), next: frame(200) }), step(1)], (rows) => got.push(rows));
      const good = [step(0, { obs: frame(10), next: frame(200) }), step(1, { obs: frame(200), next: null })];
      ingest.enqueue(good, (rows) => got.push(rows));
      const corrupt = { kind: 'jpeg' as const, jpeg: { top: Uint8Array.of(0xff, 0xd8, 0xff, 0, 1, 2) } };
      ingest.enqueue([step(0, { obs: corrupt, next: null })], (rows) => got.push(rows));
      await ingest.drained();
      expect(got[0]).toBeNull();
      expect(ingest.missingSteps).toBe(1);
      expect(got[2]).toBeNull();
      expect(ingest.failedEpisodes).toBe(1);
      const rows = got[1]!;
      expect(rows.map((r) => r.obs.length)).toEqual([E + O, E + O]);
      // Step 1's observation is step 0's next one: the same features; after termination, zeros.
      expect(Array.from(rows[1].obs.subarray(0, E))).toEqual(Array.from(rows[0].nextObs.subarray(0, E)));
      expect(Array.from(rows[0].obs.subarray(0, E))).not.toEqual(Array.from(rows[0].nextObs.subarray(0, E)));
      expect(Array.from(rows[1].nextObs.subarray(0, E))).toEqual(new Array(E).fill(0));
      expect(Array.from(rows[0].obs.subarray(E))).toEqual(Array.from(good[0].obs));
    } finally {
      await ingest.close();
    }
  });

  it('an actor refuses --send-frames features with a base that has no embedding', () => {
    const plain = { actionDim: A, act: () => new Float32Array(A) };
    const cams = [{ name: 'top', width: 84, height: 84, channels: 3, depth: false }];
    expect(() => CameraSender.create('features', plain, cams)).toThrow(
      /has no embedding output[\s\S]*--send-frames jpeg/,
    );
    expect(() => CameraSender.create('jpeg', plain, [])).toThrow(/has no cameras/);
    expect(() => checkSendFrames('png', undefined)).toThrow(/use one of: features, jpeg, none/);
  });
});
