/**
 * The learner's side of a camera session (docs/sessions.md "Cameras"): a residual in encoder mode
 * base-embedding learns on [features | state], so every logged episode's camera payloads become
 * the base's embedding before it enters the replay. Features arrive as they are; JPEG frames are
 * decoded and run through the learner's copy of the base (one onnxruntime call per episode).
 *
 * The write-ahead log holds the batches as they came (frames included), so exactly-once is the
 * log's, untouched: this runs after logging, in log order, one episode at a time. An episode whose
 * features are still being computed is neither in the replay nor in the checkpoint's `replayed`
 * watermark, so a checkpoint taken meanwhile (or a kill -9) has the log feed it again on resume.
 */
import {
  decodeJpegPayload,
  samePayload,
  type CameraPayload,
  type TransitionCamera,
} from '../../runtime/session/camera-batch.js';
import type { SessionTransition, TransitionBatch } from '../../runtime/session/codec.js';
import type { OnnxPolicy } from '../../runtime/onnx-policy.js';
import type { CameraFrames } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { withFeatures } from '../camera-features.js';

/** A session transition with [features | state] observations, ready for packSteps. */
export type FeatureStep = SessionTransition;

export class CameraIngest {
  /** Transitions logged without camera data (kept in the log, left out of the replay). */
  missingSteps = 0;
  /** Episodes whose frames could not be turned into features (corrupt JPEG), left out. */
  failedEpisodes = 0;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly warned = new Set<string>();

  constructor(
    private readonly base: OnnxPolicy,
    private readonly log: (line: string) => void,
  ) {}

  /** Feature width E (the base's embedding). */
  get featureDim(): number {
    return this.base.embeddingDim;
  }

  /** Cameras whose frames the base reads (a JPEG batch must carry them all). */
  get cameras(): string[] {
    return [...new Set(this.base.imageInputs.map((i) => i.camera))];
  }

  /**
   * Throws, naming the fix, when a batch's camera layout cannot feed this learner: features of
   * another width, or JPEG frames without a camera the base reads. Such a batch is not logged.
   */
  check(batch: TransitionBatch): void {
    const layout = batch.camera;
    if (!layout) return;
    if (layout.kind === 'features' && layout.featureDim !== this.featureDim)
      throw new ResrtError(
        `${batch.robotId} sends ${layout.featureDim} camera features, the learner's base embeds ${this.featureDim}`,
        'give the actor and the learner the same base, or send frames with --send-frames jpeg',
      );
    if (layout.kind === 'jpeg') {
      const missing = this.cameras.filter((c) => !layout.cameras.includes(c));
      if (missing.length)
        throw new ResrtError(
          `${batch.robotId} sends frames of ${layout.cameras.join(', ')}, the base also reads ${missing.join(', ')}`,
          "give the actor's robot config every camera the base reads",
        );
    }
  }

  /**
   * Queues a whole episode (rewards already set); `into` gets it with [features | state]
   * observations, or null when some step had no camera data or its frames would not decode.
   * Episodes come out in the order they went in.
   */
  enqueue(ep: readonly SessionTransition[], into: (rows: FeatureStep[] | null) => void): void {
    this.chain = this.chain.then(async () => {
      if (this.closed) return;
      let rows: FeatureStep[] | null;
      const missing = ep.filter((t) => !t.camera).length;
      if (missing) {
        this.missingSteps += missing;
        const robotId = ep[0].robotId;
        if (!this.warned.has(robotId)) {
          this.warned.add(robotId);
          this.log(
            `${robotId}: ${missing} of an episode's ${ep.length} transitions came without camera data; ` +
              'such episodes stay in the log and out of the replay (run the actor with --send-frames features or jpeg, and check its cameras)',
          );
        }
        rows = null;
      } else {
        try {
          rows = await this.withFeatures(ep);
        } catch (err) {
          this.failedEpisodes++;
          this.log(
            `${ep[0].robotId}: an episode's frames gave no features: ${(err as Error).message.split('\n')[0]}`,
          );
          rows = null;
        }
      }
      if (!this.closed) into(rows);
    });
  }

  /** Resolves when every episode queued so far has been handed on. */
  drained(): Promise<void> {
    return this.chain;
  }

  /**
   * Puts every queued episode into the replay (the learner logs nothing more once it closes), so
   * the checkpoint at a planned stop holds them all; a kill -9 instead leaves them to the log.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.chain;
    this.closed = true;
    await this.base.close();
  }

  private async withFeatures(ep: readonly SessionTransition[]): Promise<FeatureStep[]> {
    const cams = ep.map((t) => t.camera as TransitionCamera);
    // Step k's observation is step k-1's next observation: its payload is computed once.
    const obsFrom = cams.map((c, i) =>
      i > 0 && cams[i - 1].next && samePayload(cams[i - 1].next!, c.obs) ? -1 : i,
    );
    const jobs: { payload: CameraPayload; state: Float32Array }[] = [];
    const obsJob: number[] = [];
    const nextJob: number[] = [];
    ep.forEach((t, i) => {
      if (obsFrom[i] === -1) obsJob.push(nextJob[i - 1]);
      else obsJob.push(jobs.push({ payload: cams[i].obs, state: t.obs }) - 1);
      // A terminal observation's frames (JPEG sessions send them) stay zeros, as the trainer stores them.
      const next = t.terminated ? null : cams[i].next;
      nextJob.push(next ? jobs.push({ payload: next, state: t.nextObs }) - 1 : -1);
    });
    const features = await this.features(jobs);
    const zeros = new Float32Array(this.featureDim);
    return ep.map((t, i) => ({
      ...t,
      obs: withFeatures(features[obsJob[i]], t.obs),
      // After termination the base is never queried: zeros, as the trainer stores them.
      nextObs: withFeatures(nextJob[i] >= 0 ? features[nextJob[i]] : zeros, t.nextObs),
    }));
  }

  private async features(
    jobs: readonly { payload: CameraPayload; state: Float32Array }[],
  ): Promise<Float32Array[]> {
    const E = this.featureDim;
    const out: Float32Array[] = new Array<Float32Array>(jobs.length);
    const frames: CameraFrames[] = [];
    const rows: number[] = [];
    jobs.forEach((j, k) => {
      if (j.payload.kind === 'features') {
        if (j.payload.features.length !== E)
          throw new Error(`${j.payload.features.length} features, expected ${E}`);
        out[k] = j.payload.features;
        return;
      }
      frames.push(decodeJpegPayload(j.payload.jpeg));
      rows.push(k);
    });
    if (rows.length) {
      const O = this.base.obsDim;
      const state = new Float32Array(rows.length * O);
      rows.forEach((k, n) => state.set(jobs[k].state, n * O));
      const result = await this.base.runBatch(state, rows.length, undefined, frames);
      const emb = result.embedding;
      if (!emb) throw new Error('the base returned no embedding');
      rows.forEach((k, n) => (out[k] = emb.slice(n * E, (n + 1) * E)));
    }
    return out;
  }
}

/** Each robot's cameras' latest JPEG frames, as the actors publish them, for the dashboard. */
export class LatestFrames {
  private readonly frames = new Map<string, Uint8Array>();

  constructor(private readonly frameTopicPrefix: string) {}

  /** Takes a message on the frame topics; false for any other topic. */
  offer(topic: string, payload: Uint8Array): boolean {
    if (!topic.startsWith(this.frameTopicPrefix)) return false;
    const [robot, camera] = topic.slice(this.frameTopicPrefix.length).split('/');
    if (robot && camera) this.frames.set(`${robot}/${camera}`, new Uint8Array(payload));
    return true;
  }

  get(robotId: string, camera: string): Uint8Array | null {
    return this.frames.get(`${robotId}/${camera}`) ?? null;
  }
}
