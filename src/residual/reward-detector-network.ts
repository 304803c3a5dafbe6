/**
 * The success detector's network as engine graphs over one flat parameter vector: a conv encoder
 * per camera (src/nn/conv-encoder.ts, the same DrQ/ResFiT encoder BC uses), the embeddings
 * concatenated, an MLP head to one logit. Trained with the logistic loss on balanced minibatches;
 * the same forward pass, with the parameters as constants, is the exported file.
 */
import type { Rng } from '../util/rng.js';
import { encodeModel, graphChecksum } from '../util/onnx-proto.js';
import {
  addAdamUpdate,
  CompiledGraph,
  convEncoderApply,
  convEncoderParamSpecs,
  Graph,
  initConvEncoder,
  mlpApply,
  mlpParamSpecs,
  mlpWidths,
  op,
  ParamLayout,
  type ConvEncoderSpec,
  type Engine,
  type MlpSpec,
  type Value,
} from '../nn/index.js';
import { batchFreeModel, MetaKey, RESRT_METADATA_FORMAT } from '../runtime/onnx-export.js';
import {
  DETECTOR_KIND,
  DetectorMeta,
  detectorImageInput,
  LOGIT_OUTPUT,
  PROBABILITY_OUTPUT,
  type DetectorCamera,
} from '../runtime/success-detector.js';

export interface DetectorNetworkSpec {
  /** `mjcfCamera`: the simulator camera of an extra stream, recorded in the file (DetectorCamera). */
  cameras: readonly { name: string; encoder: ConvEncoderSpec; mjcfCamera?: string }[];
  hidden: readonly number[];
}

const encoderPrefix = (k: number): string => `enc${k}/`;

/** Buffers of one optimizer step (the caller swaps its double buffers afterwards). */
export interface DetectorStepState {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export class DetectorNetwork {
  readonly layout: ParamLayout;
  readonly head: MlpSpec;
  private readonly steps = new Map<number, Promise<CompiledGraph>>();
  private readonly forwards = new Map<number, Promise<CompiledGraph>>();

  constructor(
    readonly engine: Engine,
    readonly spec: DetectorNetworkSpec,
  ) {
    const embedding = spec.cameras.reduce((s, c) => s + c.encoder.features, 0);
    this.head = { inDim: embedding, hidden: spec.hidden, outDim: 1, layerNorm: true };
    this.layout = new ParamLayout([
      ...spec.cameras.flatMap((c, k) => convEncoderParamSpecs(c.encoder, encoderPrefix(k))),
      ...mlpParamSpecs(this.head),
    ]);
  }

  /** He initialisation for the ReLU layers, a small output layer (initial P(success) near ½). */
  init(rng: Rng): Float32Array {
    const flat = new Float32Array(this.layout.size);
    this.spec.cameras.forEach((c, k) => initConvEncoder(this.layout, flat, c.encoder, encoderPrefix(k), rng));
    const widths = mlpWidths(this.head);
    for (let l = 0; l + 1 < widths.length; l++) {
      const last = l + 2 === widths.length;
      const w = this.layout.view(flat, `l${l}/w`);
      const scale = last ? 0.01 : Math.sqrt(2 / widths[l]);
      for (let i = 0; i < w.length; i++) w[i] = rng.normal(0, scale);
      if (!last) this.layout.view(flat, `l${l}/gamma`).fill(1);
    }
    return flat;
  }

  /** images: one [B, 3, H, W] value per camera → logit [B, 1]. */
  logit(p: ReadonlyMap<string, Value>, images: readonly Value[]): Value {
    const features = this.spec.cameras.map((c, k) =>
      convEncoderApply(p, images[k], c.encoder, encoderPrefix(k)),
    );
    return mlpApply(p, features.length === 1 ? features[0] : op.concat(features, 1), this.head);
  }

  private imageInputs(g: Graph, rows: number, name: (camera: string, k: number) => string): Value[] {
    return this.spec.cameras.map((c, k) =>
      g.input(name(c.name, k), [rows, 3, c.encoder.height, c.encoder.width]),
    );
  }

  /**
   * One Adam step on the mean logistic loss of `rows` labelled images:
   *   ℓ(z, y) = max(z, 0) − y·z + log(1 + e^(−|z|))   (= −y·log σ(z) − (1−y)·log(1−σ(z)), stably)
   */
  private trainGraph(rows: number): Promise<CompiledGraph> {
    let c = this.steps.get(rows);
    if (!c) {
      const g = new Graph(`detector_step_${rows}`);
      const params = g.input('params', [this.layout.size]);
      const p = this.layout.unpack(params);
      const z = this.logit(
        p,
        this.imageInputs(g, rows, (_, k) => `image${k}`),
      );
      const y = g.input('y', [rows, 1]);
      const loss = op.mean(
        op.add(op.sub(op.relu(z), op.mul(y, z)), op.log(op.add(op.exp(op.neg(op.abs(z))), 1))),
      );
      addAdamUpdate(g, this.layout, params, p, loss, { beta1: 0.9, beta2: 0.999, clipNorm: Infinity });
      c = CompiledGraph.create(g, this.engine);
      this.steps.set(rows, c);
    }
    return c;
  }

  async step(
    rows: number,
    state: DetectorStepState,
    next: DetectorStepState,
    scalars: { stepSize: Float32Array; epsHat: Float32Array },
    images: readonly Float32Array[],
    labels: Float32Array,
  ): Promise<number> {
    const feeds: Record<string, Float32Array> = { ...state, ...scalars, y: labels };
    images.forEach((img, k) => (feeds[`image${k}`] = img));
    const out = await (
      await this.trainGraph(rows)
    ).run(feeds, { 'next:params': next.params, 'next:m': next.m, 'next:v': next.v });
    return out.loss[0];
  }

  /** Logits of `rows` images per camera (the parameters as an input). */
  async logits(params: Float32Array, images: readonly Float32Array[], rows: number): Promise<Float32Array> {
    let c = this.forwards.get(rows);
    if (!c) {
      const g = new Graph(`detector_forward_${rows}`);
      const p = this.layout.unpack(g.input('params', [this.layout.size]));
      g.output(
        'logit',
        this.logit(
          p,
          this.imageInputs(g, rows, (_, k) => `image${k}`),
        ),
      );
      c = CompiledGraph.create(g, this.engine);
      this.forwards.set(rows, c);
    }
    const feeds: Record<string, Float32Array> = { params };
    images.forEach((img, k) => (feeds[`image${k}`] = img));
    return (await (await c).run(feeds)).logit;
  }

  /**
   * The detector file: the forward pass with the trained parameters as constants, inputs
   * `observation.images.<camera>` with a symbolic batch axis, outputs the logit and σ(logit).
   */
  exportOnnx(flat: Float32Array, metadata: Record<string, string>): Uint8Array {
    const g = new Graph('resrt_success_detector');
    const p = new Map(
      this.layout.entries.map((e) => [e.name, g.constant(this.layout.view(flat, e.name), e.shape)]),
    );
    const z = this.logit(
      p,
      this.imageInputs(g, 1, (camera) => detectorImageInput(camera)),
    );
    g.output(LOGIT_OUTPUT, z);
    // σ(z) = 1 / (1 + e^(−z)); e^(−z) overflowing to ∞ gives exactly 0.
    g.output(PROBABILITY_OUTPUT, op.div(1, op.add(op.exp(op.neg(z)), 1)));
    const model = batchFreeModel(g.encode());
    const cameras: DetectorCamera[] = this.spec.cameras.map((c) => ({
      name: c.name,
      width: c.encoder.width,
      height: c.encoder.height,
      ...(c.mjcfCamera !== undefined ? { mjcfCamera: c.mjcfCamera } : {}),
    }));
    const meta: Record<string, string> = {
      ...metadata,
      [MetaKey.format]: RESRT_METADATA_FORMAT,
      [MetaKey.kind]: DETECTOR_KIND,
      [DetectorMeta.cameras]: JSON.stringify(cameras),
    };
    model.metadataProps = Object.entries(meta).map(([key, value]) => ({ key, value }));
    const checksum = graphChecksum(encodeModel(model));
    if (!checksum) throw new Error('internal: encoded detector has no graph');
    model.metadataProps.push({ key: MetaKey.checksum, value: checksum });
    return encodeModel(model);
  }

  async release(): Promise<void> {
    const all = [...this.steps.values(), ...this.forwards.values()];
    this.steps.clear();
    this.forwards.clear();
    await Promise.all(all.map(async (c) => (await c).release()));
  }
}
