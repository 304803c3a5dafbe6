/**
 * The BC network as engine graphs over one flat parameter vector. State only:
 * (x − mean)/std → MLP (ReLU, optional LayerNorm) → linear. From pixels: one conv encoder per
 * camera (src/nn/conv-encoder.ts) whose embeddings, concatenated, go before the normalized state
 * into the same MLP head. The same forward pass builds the training step (MSE, gradients, Adam),
 * the forward pass the export is checked against, and, with the parameters as constants, the
 * exported visuomotor file.
 */
import type { DenseLayerSpec } from '../types.js';
import type { Rng } from '../util/rng.js';
import {
  addAdamUpdate,
  CompiledGraph,
  convEncoderApply,
  convEncoderParamSpecs,
  Graph,
  initConvEncoder,
  LAYER_NORM_EPS,
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

export interface BcCamera {
  name: string;
  encoder: ConvEncoderSpec;
}

export interface BcNetworkSpec {
  /** 0: the network reads its cameras alone (no state input; a state estimator). */
  stateDim: number;
  /** Cameras read through their own encoder; empty for a state-only policy. */
  cameras: readonly BcCamera[];
  hidden: readonly number[];
  layerNorm: boolean;
  /** Action dim × chunk length. */
  outDim: number;
}

/** Feeds of one run: the state rows and one [rows, 3, H, W] image batch per camera. */
export interface BcInputs {
  state: Float32Array;
  images: readonly Float32Array[];
}

export interface BcOutputs {
  action: Float32Array;
  /** [rows, embeddingDim]; empty for a state-only network. */
  embedding: Float32Array;
}

const encoderPrefix = (k: number): string => `enc${k}/`;

export class BcNetwork {
  readonly layout: ParamLayout;
  readonly head: MlpSpec;
  /** Width of the concatenated camera embeddings. */
  readonly embeddingDim: number;
  private readonly steps = new Map<number, Promise<CompiledGraph>>();
  private readonly forwards = new Map<number, Promise<CompiledGraph>>();

  constructor(
    readonly engine: Engine,
    readonly spec: BcNetworkSpec,
    readonly mean: Float32Array,
    readonly std: Float32Array,
  ) {
    if (spec.stateDim === 0 && spec.cameras.length === 0)
      throw new Error('internal: a BC network reads a state, a camera, or both');
    this.embeddingDim = spec.cameras.reduce((s, c) => s + c.encoder.features, 0);
    this.head = {
      inDim: this.embeddingDim + spec.stateDim,
      hidden: spec.hidden,
      outDim: spec.outDim,
      layerNorm: spec.layerNorm,
    };
    // A state-only network keeps exactly the parameter layout it always had.
    this.layout = new ParamLayout([
      ...spec.cameras.flatMap((c, k) => convEncoderParamSpecs(c.encoder, encoderPrefix(k))),
      ...mlpParamSpecs(this.head),
    ]);
  }

  /** He initialisation for ReLU layers; a small output layer so initial actions sit near zero. */
  init(rng: Rng): Float32Array {
    const flat = new Float32Array(this.layout.size);
    this.spec.cameras.forEach((c, k) => initConvEncoder(this.layout, flat, c.encoder, encoderPrefix(k), rng));
    const widths = mlpWidths(this.head);
    for (let l = 0; l + 1 < widths.length; l++) {
      const last = l + 2 === widths.length;
      const scale = last ? 0.01 : Math.sqrt(2 / widths[l]);
      const w = this.layout.view(flat, `l${l}/w`);
      for (let i = 0; i < w.length; i++) w[i] = rng.normal(0, scale);
      if (this.head.layerNorm && !last) this.layout.view(flat, `l${l}/gamma`).fill(1);
    }
    return flat;
  }

  /** action [B, outDim] and, with cameras, the embedding [B, embeddingDim] it was computed from. */
  forward(
    p: ReadonlyMap<string, Value>,
    state: Value | null,
    images: readonly Value[],
  ): { action: Value; embedding: Value | null } {
    const d = this.spec.stateDim;
    const z = state
      ? op.div(op.sub(state, state.graph.constant(this.mean, [d])), state.graph.constant(this.std, [d]))
      : null;
    if (this.spec.cameras.length === 0) return { action: mlpApply(p, z!, this.head), embedding: null };
    const features = this.spec.cameras.map((c, k) =>
      convEncoderApply(p, images[k], c.encoder, encoderPrefix(k)),
    );
    const embedding = op.concat(features, 1);
    return { action: mlpApply(p, z ? op.concat([embedding, z], 1) : embedding, this.head), embedding };
  }

  /** The state input, or null for a network that reads its cameras alone. */
  private stateInput(g: Graph, rows: number, name: string): Value | null {
    return this.spec.stateDim > 0 ? g.input(name, [rows, this.spec.stateDim]) : null;
  }

  private imageInputs(g: Graph, rows: number, name: (c: BcCamera, k: number) => string): Value[] {
    return this.spec.cameras.map((c, k) => g.input(name(c, k), [rows, 3, c.encoder.height, c.encoder.width]));
  }

  private feeds(inputs: BcInputs): Record<string, Float32Array> {
    const feeds: Record<string, Float32Array> = this.spec.stateDim > 0 ? { x: inputs.state } : {};
    inputs.images.forEach((img, k) => (feeds[`image${k}`] = img));
    return feeds;
  }

  /** One minibatch step: MSE of the action, its gradients, one Adam step. */
  trainGraph(rows: number): Promise<CompiledGraph> {
    let c = this.steps.get(rows);
    if (!c) {
      const g = new Graph(`bc_step_${rows}`);
      const params = g.input('params', [this.layout.size]);
      const p = this.layout.unpack(params);
      const state = this.stateInput(g, rows, 'x');
      const { action } = this.forward(
        p,
        state,
        this.imageInputs(g, rows, (_, k) => `image${k}`),
      );
      const loss = op.mean(op.square(op.sub(action, g.input('y', [rows, this.spec.outDim]))));
      addAdamUpdate(g, this.layout, params, p, loss, { beta1: 0.9, beta2: 0.999, clipNorm: Infinity });
      c = CompiledGraph.create(g, this.engine);
      this.steps.set(rows, c);
    }
    return c;
  }

  /** Runs one training step; the caller swaps its double buffers afterwards. */
  async step(
    rows: number,
    state: { params: Float32Array; m: Float32Array; v: Float32Array },
    next: { params: Float32Array; m: Float32Array; v: Float32Array },
    scalars: { stepSize: Float32Array; epsHat: Float32Array },
    inputs: BcInputs,
    target: Float32Array,
  ): Promise<number> {
    const out = await (
      await this.trainGraph(rows)
    ).run(
      { ...state, ...scalars, ...this.feeds(inputs), y: target },
      { 'next:params': next.params, 'next:m': next.m, 'next:v': next.v },
    );
    return out.loss[0];
  }

  /** The forward pass for `rows` rows with the parameters as an input. */
  async predict(params: Float32Array, inputs: BcInputs, rows: number): Promise<BcOutputs> {
    let c = this.forwards.get(rows);
    if (!c) {
      const g = new Graph(`bc_forward_${rows}`);
      const p = this.layout.unpack(g.input('params', [this.layout.size]));
      const state = this.stateInput(g, rows, 'x');
      const { action, embedding } = this.forward(
        p,
        state,
        this.imageInputs(g, rows, (_, k) => `image${k}`),
      );
      g.output('action', action);
      if (embedding) g.output('embedding', embedding);
      c = CompiledGraph.create(g, this.engine);
      this.forwards.set(rows, c);
    }
    const out = await (await c).run({ params, ...this.feeds(inputs) });
    return { action: out.action, embedding: out.embedding ?? new Float32Array(0) };
  }

  /**
   * The inference graph with the trained parameters as constants, batch 1, inputs named
   * `stateName` and `imageName(camera)`, outputs `action` ([B, A], or [B, H, A] for chunks) and
   * `embedding`. Every op keeps the batch axis out of its constants, so the caller may declare
   * the batch axis symbolic.
   */
  inferenceGraph(
    flat: Float32Array,
    /** `embedding` null: no embedding output (a state estimator's file has its one output). */
    names: { state: string; image: (camera: string) => string; action: string; embedding: string | null },
    chunk: { length: number; actionDim: number },
  ): Graph {
    const g = new Graph('resrt_visuomotor_bc');
    const p = new Map(
      this.layout.entries.map((e) => [e.name, g.constant(this.layout.view(flat, e.name), e.shape)]),
    );
    const state = this.stateInput(g, 1, names.state);
    const { action, embedding } = this.forward(
      p,
      state,
      this.imageInputs(g, 1, (c) => names.image(c.name)),
    );
    // Reshape with 0 copies the batch dimension instead of naming it.
    const out =
      chunk.length > 1
        ? g.emit1('Reshape', [action, g.ints([0, chunk.length, chunk.actionDim])], {
            shape: [1, chunk.length, chunk.actionDim],
          })
        : action;
    g.output(names.action, out);
    if (embedding && names.embedding) g.output(names.embedding, embedding);
    return g;
  }

  /** The head as dense layers (for the state-only exporter, which has its own ONNX writer). */
  denseSpecs(flat: Float32Array): DenseLayerSpec[] {
    const widths = mlpWidths(this.head);
    return widths.slice(0, -1).map((inDim, l) => {
      const last = l + 2 === widths.length;
      const view = (name: string): Float32Array => this.layout.view(flat, `l${l}/${name}`).slice();
      return {
        inDim,
        outDim: widths[l + 1],
        weight: view('w'),
        bias: view('b'),
        layerNorm:
          this.head.layerNorm && !last
            ? { gamma: view('gamma'), beta: view('beta'), epsilon: LAYER_NORM_EPS }
            : undefined,
        activation: last ? 'linear' : 'relu',
      };
    });
  }

  async release(): Promise<void> {
    const all = [...this.steps.values(), ...this.forwards.values()];
    this.steps.clear();
    this.forwards.clear();
    await Promise.all(all.map(async (c) => (await c).release()));
  }
}
