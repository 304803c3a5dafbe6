/**
 * Graph surgery: a base policy graph and a residual actor graph joined into one ONNX model, so a
 * control tick runs one onnxruntime session call instead of two.
 *
 *   obs ─► base/… ─► base_action ─────────────────────────► output 'base_action' [batch, A]
 *    │    (images)  └─► embedding (visuomotor bases)
 *    │                    │ (the residual's base-action and base_embedding inputs)
 *    └──► residual/… ◄────┘ ──────────────────────────────► output 'residual'    [batch, A]
 *
 * A visuomotor base keeps its image inputs under their own names (the caller preprocesses frames
 * into them as for the base alone); a camera residual's `base_embedding` input is wired to the
 * base's embedding output, so the embedding never leaves the graph.
 * Weights stay initializers: onnxruntime prepacks constant GEMM operands, which is both faster and
 * what the two separate sessions compute, bit for bit (weights fed as inputs ran ~1.5x slower and
 * differed in the last bits). A new residual version is therefore a new fused model.
 * The composition a = clip(base + scale * r) stays outside the graph (ResidualComposer), where
 * the scale changes per episode and NaN reaches the loop as NaN. Pure functions over decoded
 * models; `fused-policy.ts` loads and verifies the result.
 */
import protobuf from 'protobufjs';
import {
  attr,
  decodeModel,
  encodeModel,
  floatValueInfo,
  valueShape,
  type OnnxModel,
  type OnnxNode,
  type OnnxValueInfo,
} from '../util/onnx-proto.js';

export const FusedName = {
  obs: 'obs',
  baseObs: 'base_obs',
  residualObs: 'residual_obs',
  baseAction: 'base_action',
  residual: 'residual',
} as const;

/** What the loader learned about one of the two graphs (a subset of OnnxLayout). */
export interface GraphRole {
  /**
   * Vector inputs in row order: [obs] for the base; [obs, base_action], [obs+base_action] or (a
   * camera residual) [base_embedding, obs, base_action] for the residual.
   */
  feeds: { name: string; role: 'obs' | 'base_action' | 'obs+base_action' | 'embedding' }[];
  /** The base's image inputs (graph input names); they stay inputs of the fused model. */
  imageInputs?: readonly string[];
  /** The base's embedding output, which a camera residual reads; null without one. */
  embeddingOutput?: string | null;
  outputName: string;
  /** Observation width (for the residual: without the base action). */
  obsDim: number;
  actionDim: number;
  chunkLength: number;
}

export interface FusedGraph {
  bytes: Uint8Array;
  /** Observation inputs: one shared input, or one per model when their normalizations differ. */
  obsInputs: { base: string; residual: string };
}

export type FusionOutcome = { ok: true; graph: FusedGraph } | { ok: false; reason: string };

const DEFAULT_DOMAINS = new Set(['', 'ai.onnx']);

// ---------------------------------------------------------------------------------------------
// What a decode → encode round trip through util/onnx-proto.ts keeps. Anything else (subgraphs, model
// functions, sparse or string tensors) would be dropped silently, so such files are not fused.

const KNOWN_FIELDS: Record<string, Record<number, string | undefined>> = {
  model: { 1: '', 2: '', 3: '', 4: '', 5: '', 6: '', 7: 'graph', 8: '', 14: '' },
  graph: { 1: 'node', 2: '', 5: 'tensor', 10: '', 11: '', 12: '', 13: '' },
  node: { 1: '', 2: '', 3: '', 4: '', 5: 'attribute', 6: '', 7: '' },
  attribute: { 1: '', 2: '', 3: '', 4: '', 5: 'tensor', 7: '', 8: '', 13: '', 20: '' },
  tensor: { 1: '', 2: '', 4: '', 5: '', 7: '', 8: '', 9: '', 10: '', 12: '', 13: '', 14: '' },
};

const FIELD_NAMES: Record<string, Record<number, string>> = {
  model: { 20: 'training_info', 25: 'functions (model-local functions)', 26: 'configuration' },
  graph: { 15: 'sparse_initializer', 14: 'quantization_annotation', 16: 'metadata_props' },
  node: { 8: 'overload', 9: 'metadata_props', 10: 'device_configurations' },
  attribute: {
    6: 'g (a subgraph: If/Loop/Scan)',
    11: 'graphs (subgraphs)',
    9: 'strings',
    10: 'tensors',
    14: 'tp (a type proto)',
    15: 'type_protos',
    21: 'ref_attr_name (a function attribute)',
    22: 'sparse_tensor',
    23: 'sparse_tensors',
  },
  tensor: { 3: 'segment', 6: 'string_data', 11: 'uint64_data', 16: 'metadata_props' },
};

/** The first protobuf field this module's schema would drop, as a readable path; null if none. */
export function unsupportedContent(bytes: Uint8Array): string | null {
  const walk = (reader: protobuf.Reader, end: number, kind: string, path: string): string | null => {
    const known = KNOWN_FIELDS[kind];
    const counters: Record<number, number> = {};
    while (reader.pos < end) {
      const tag = reader.uint32();
      const field = tag >>> 3;
      const wire = tag & 7;
      if (!(field in known)) {
        const name = FIELD_NAMES[kind][field] ?? `field ${field}`;
        return `${path || 'model'} has ${name}`;
      }
      const child = known[field];
      if (child && wire === 2) {
        const len = reader.uint32();
        const childEnd = reader.pos + len;
        const index = (counters[field] = (counters[field] ?? -1) + 1);
        const label =
          child === 'graph'
            ? 'graph'
            : kind === 'graph' && child === 'tensor'
              ? `initializer[${index}]`
              : `${child}[${index}]`;
        const found = walk(reader, childEnd, child, path ? `${path}.${label}` : label);
        if (found) return found;
        reader.pos = childEnd;
      } else {
        reader.skipType(wire);
      }
    }
    return null;
  };
  return walk(protobuf.Reader.create(bytes), bytes.length, 'model', '');
}

// ---------------------------------------------------------------------------------------------

function defaultOpset(model: OnnxModel): number | undefined {
  return model.opsetImport.find((o) => DEFAULT_DOMAINS.has(o.domain ?? ''))?.version;
}

function mergeOpsets(base: OnnxModel, residual: OnnxModel): OnnxModel['opsetImport'] | string {
  const merged = new Map<string, number>();
  for (const [who, model] of [
    ['base', base],
    ['residual', residual],
  ] as const) {
    for (const o of model.opsetImport) {
      const domain = DEFAULT_DOMAINS.has(o.domain ?? '') ? '' : (o.domain as string);
      const seen = merged.get(domain);
      if (seen !== undefined && seen !== o.version) {
        return `the base uses opset ${seen} and the ${who} opset ${o.version} of domain '${domain || 'ai.onnx'}': operators change meaning between opsets, so the two graphs cannot share one model`;
      }
      merged.set(domain, o.version);
    }
  }
  return [...merged].map(([domain, version]) => ({ domain, version }));
}

/** Renames every value of a graph under a prefix; `rename` overrides chosen names (graph inputs). */
function prefixNodes(nodes: OnnxNode[], prefix: string, rename: Map<string, string>): OnnxNode[] {
  const map = (name: string): string => (name === '' ? '' : (rename.get(name) ?? `${prefix}${name}`));
  return nodes.map((n, i) => ({
    ...n,
    name: `${prefix}${n.name || `${n.opType}_${i}`}`,
    input: n.input.map(map),
    output: n.output.map(map),
  }));
}

function checkGraph(model: OnnxModel, who: string, role: Pick<GraphRole, 'chunkLength'>): string | null {
  if (role.chunkLength !== 1) {
    return `the ${who} predicts action chunks (H = ${role.chunkLength}); its chunk executor runs between the base and the residual`;
  }
  const external = model.graph.initializer.find(
    (t) => t.dataLocation === 1 || (t.externalData?.length ?? 0) > 0,
  );
  if (external) return `the ${who} keeps initializer '${external.name}' in an external data file`;
  for (const node of model.graph.node) {
    if (node.domain && !DEFAULT_DOMAINS.has(node.domain) && node.domain !== 'com.microsoft') {
      return `the ${who} uses operator ${node.domain}::${node.opType} from a custom domain`;
    }
  }
  return null;
}

/**
 * Joins the two graphs. `shareObs`: both models read the same observation vector (no
 * normalization, baked normalization, or identical statistics applied in JS); otherwise the
 * fused model takes one observation input per model.
 */
export function fuseBaseAndResidual(
  baseBytes: Uint8Array,
  base: GraphRole,
  residualBytes: Uint8Array,
  residual: GraphRole,
  options: { shareObs: boolean },
): FusionOutcome {
  for (const [who, bytes] of [
    ['base', baseBytes],
    ['residual', residualBytes],
  ] as const) {
    const unsupported = unsupportedContent(bytes);
    if (unsupported)
      return {
        ok: false,
        reason: `the ${who} file's ${unsupported}, which resrt's graph surgery does not carry over`,
      };
  }
  const b = decodeModel(baseBytes);
  const r = decodeModel(residualBytes);
  const problem = checkGraph(b, 'base', base) ?? checkGraph(r, 'residual', residual);
  if (problem) return { ok: false, reason: problem };
  if (base.actionDim !== residual.actionDim) {
    return {
      ok: false,
      reason: `the base outputs ${base.actionDim} action dims, the residual ${residual.actionDim}`,
    };
  }
  if (base.feeds.length !== 1 || base.feeds[0].role !== 'obs') {
    return {
      ok: false,
      reason: `the base takes ${base.feeds.length} inputs; fusion handles one observation input`,
    };
  }
  if (defaultOpset(b) === undefined || defaultOpset(r) === undefined) {
    return { ok: false, reason: 'a graph declares no default-domain opset' };
  }
  const opsets = mergeOpsets(b, r);
  if (typeof opsets === 'string') return { ok: false, reason: opsets };

  const obsBase = options.shareObs ? FusedName.obs : FusedName.baseObs;
  const obsResidual = options.shareObs ? FusedName.obs : FusedName.residualObs;
  const nodes: OnnxNode[] = [];
  const A = base.actionDim;

  // Image inputs keep their names (the loop feeds them as it feeds the base alone).
  const imageInputs: OnnxValueInfo[] = [];
  const reserved = new Set<string>(Object.values(FusedName));
  for (const name of base.imageInputs ?? []) {
    const info = b.graph.input.find((i) => i.name === name);
    if (!info) return { ok: false, reason: `the base graph has no image input '${name}'` };
    if (reserved.has(name)) {
      return {
        ok: false,
        reason: `the base's image input '${name}' has a name the fused model uses for another input`,
      };
    }
    imageInputs.push(info);
  }

  // Base: its observation input becomes the fused one; everything else moves under base/.
  const baseInputs = new Map<string, string>([[base.feeds[0].name, obsBase]]);
  for (const info of imageInputs) baseInputs.set(info.name, info.name);
  nodes.push(...prefixNodes(b.graph.node, 'base/', baseInputs));
  const baseOut = b.graph.output.find((o) => o.name === base.outputName);
  if (!baseOut) return { ok: false, reason: `the base graph has no output '${base.outputName}'` };
  let baseAction = `base/${base.outputName}`;
  const rank = valueShape(baseOut)?.length;
  if (rank !== 2) {
    // [batch, 1, A] (a chunk of one): the residual reads and the loop records [batch, A].
    nodes.push({
      name: 'fused/flatten_base',
      opType: 'Flatten',
      input: [baseAction],
      output: ['fused/base_flat'],
      attribute: [attr.int('axis', 1)],
    });
    baseAction = 'fused/base_flat';
  }

  // Residual: observation and base-action inputs wired to the fused values.
  const residualInputs = new Map<string, string>();
  for (const feed of residual.feeds) {
    if (feed.role === 'obs') residualInputs.set(feed.name, obsResidual);
    else if (feed.role === 'base_action') residualInputs.set(feed.name, baseAction);
    else if (feed.role === 'embedding') {
      const embedding = base.embeddingOutput;
      if (!embedding || !b.graph.output.some((o) => o.name === embedding)) {
        return {
          ok: false,
          reason: `the residual reads the base's embedding and the base graph has no embedding output`,
        };
      }
      residualInputs.set(feed.name, `base/${embedding}`);
    } else {
      nodes.push({
        name: 'fused/concat_residual_input',
        opType: 'Concat',
        input: [obsResidual, baseAction],
        output: [`residual/${feed.name}`],
        attribute: [attr.int('axis', 1)],
      });
    }
  }
  // Initializers that are also listed as graph inputs (IR < 4 files) are not feeds here.
  const initNames = new Set(r.graph.initializer.map((t) => t.name));
  const residualFeedNames = new Set(residual.feeds.map((f) => f.name));
  const strayInput = r.graph.input.find((i) => !residualFeedNames.has(i.name) && !initNames.has(i.name));
  if (strayInput) return { ok: false, reason: `the residual has an extra input '${strayInput.name}'` };
  nodes.push(...prefixNodes(r.graph.node, 'residual/', residualInputs));
  if (!r.graph.output.some((o) => o.name === residual.outputName)) {
    return { ok: false, reason: `the residual graph has no output '${residual.outputName}'` };
  }
  nodes.push(
    { name: 'fused/base_action', opType: 'Identity', input: [baseAction], output: [FusedName.baseAction] },
    {
      name: 'fused/residual',
      opType: 'Identity',
      input: [`residual/${residual.outputName}`],
      output: [FusedName.residual],
    },
  );

  const inputs: OnnxValueInfo[] = [floatValueInfo(obsBase, ['batch', base.obsDim])];
  if (!options.shareObs) inputs.push(floatValueInfo(obsResidual, ['batch', residual.obsDim]));
  inputs.push(...imageInputs);
  const model: OnnxModel = {
    irVersion: Math.max(Number(b.irVersion), Number(r.irVersion)),
    producerName: 'resrt',
    producerVersion: 'fused',
    opsetImport: opsets,
    graph: {
      name: 'resrt_fused_policy',
      node: nodes,
      initializer: [
        ...b.graph.initializer.map((t) => ({ ...t, name: `base/${t.name}` })),
        ...r.graph.initializer.map((t) => ({ ...t, name: `residual/${t.name}` })),
      ],
      input: inputs,
      output: [
        floatValueInfo(FusedName.baseAction, ['batch', A]),
        floatValueInfo(FusedName.residual, ['batch', A]),
      ],
    },
    metadataProps: [],
  };
  return {
    ok: true,
    graph: { bytes: encodeModel(model), obsInputs: { base: obsBase, residual: obsResidual } },
  };
}

// ---------------------------------------------------------------------------------------------
// An image encoder in front of a residual: one residual file that reads images.

/**
 * The default-domain opset the residual MLP is written at (onnx-export.ts). None of its operators
 * (Concat, Sub, Div, Gemm, LayerNormalization, Relu, Tanh, Mul) has changed meaning in a later
 * opset, so it runs unchanged at the encoder's opset when that is at least this one.
 */
export const RESIDUAL_MLP_MIN_OPSET = 17;

/** Why an encoder graph cannot be carried into a residual file; null when it can. */
export function encoderGraphProblem(bytes: Uint8Array): string | null {
  const unsupported = unsupportedContent(bytes);
  if (unsupported) return `its ${unsupported}, which resrt's graph surgery does not carry over`;
  const model = decodeModel(bytes);
  const problem = checkGraph(model, 'encoder', { chunkLength: 1 });
  if (problem) return problem;
  const opset = defaultOpset(model);
  if (opset === undefined) return 'it declares no default-domain opset';
  if (opset < RESIDUAL_MLP_MIN_OPSET) {
    return `it uses opset ${opset}; the residual it feeds needs opset ${RESIDUAL_MLP_MIN_OPSET} or later (LayerNormalization) in the same file`;
  }
  return null;
}

/**
 * Joins a frozen encoder (image inputs -> `encoderOutput` [batch, E]) and a residual MLP whose
 * input `featureInput` takes those features, into one graph:
 *
 *   observation.images.<camera> ─► encoder/… ─► features ─┐
 *   obs ──────────────────────────────────────────────────┼─► residual/… ─► residual [batch, A]
 *   base_action ──────────────────────────────────────────┘
 *
 * Image inputs keep the encoder's names, types and shapes; `imageShapes` may fix their height and
 * width (an encoder exported with symbolic sizes, resolved against the cameras it was trained on).
 * The merged model has no metadata: the caller writes it.
 */
export function prependEncoder(
  encoderBytes: Uint8Array,
  encoder: { imageInputs: readonly string[]; outputName: string; imageShapes?: Record<string, number[]> },
  residualBytes: Uint8Array,
  featureInput: string,
): { ok: true; model: OnnxModel } | { ok: false; reason: string } {
  const problem = encoderGraphProblem(encoderBytes);
  if (problem) return { ok: false, reason: `the encoder cannot be merged into the residual: ${problem}` };
  const e = decodeModel(encoderBytes);
  const r = decodeModel(residualBytes);
  if (!e.graph.output.some((o) => o.name === encoder.outputName)) {
    return { ok: false, reason: `the encoder graph has no output '${encoder.outputName}'` };
  }
  const residualInputs = new Set(r.graph.input.map((i) => i.name));
  if (!residualInputs.has(featureInput)) {
    return { ok: false, reason: `the residual graph has no feature input '${featureInput}'` };
  }
  const imageInputs: OnnxValueInfo[] = [];
  for (const name of encoder.imageInputs) {
    const info = e.graph.input.find((i) => i.name === name);
    if (!info) return { ok: false, reason: `the encoder graph has no image input '${name}'` };
    if (residualInputs.has(name)) {
      return { ok: false, reason: `the encoder's image input '${name}' is also an input of the residual` };
    }
    const shape = encoder.imageShapes?.[name];
    const dims = info.type?.tensorType?.shape?.dim;
    if (shape && dims?.length === shape.length) {
      // The batch axis stays as exported; height and width become the sizes trained with.
      shape.forEach((d, k) => {
        if (k > 0) dims[k] = { dimValue: d };
      });
    }
    imageInputs.push(info);
  }
  const encoderNames = new Map(encoder.imageInputs.map((n) => [n, n]));
  const features = `encoder/${encoder.outputName}`;
  const residualNames = new Map<string, string>([[featureInput, features]]);
  for (const name of residualInputs) if (name !== featureInput) residualNames.set(name, name);
  for (const o of r.graph.output) residualNames.set(o.name, o.name);
  // The residual's opset is the floor; a later encoder opset runs the residual's operators unchanged.
  const opsetImport = e.opsetImport.map((o) =>
    DEFAULT_DOMAINS.has(o.domain ?? '')
      ? { domain: '', version: Math.max(Number(o.version), defaultOpset(r) ?? 0) }
      : o,
  );
  const model: OnnxModel = {
    irVersion: Math.max(Number(e.irVersion), Number(r.irVersion)),
    producerName: 'resrt',
    producerVersion: r.producerVersion,
    opsetImport,
    graph: {
      name: 'resrt_image_residual',
      node: [
        ...prefixNodes(e.graph.node, 'encoder/', encoderNames),
        ...prefixNodes(r.graph.node, 'residual/', residualNames),
      ],
      initializer: [
        ...e.graph.initializer.map((t) => ({ ...t, name: `encoder/${t.name}` })),
        ...r.graph.initializer.map((t) => ({ ...t, name: `residual/${t.name}` })),
      ],
      input: [...imageInputs, ...r.graph.input.filter((i) => i.name !== featureInput)],
      output: r.graph.output,
    },
    metadataProps: [],
  };
  return { ok: true, model };
}
