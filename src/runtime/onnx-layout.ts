/**
 * How an ONNX graph's inputs and outputs map onto (observation, base action) -> action (chunk),
 * and whether that fits the task. Pure functions over an I/O description, so `resrt inspect`
 * can list every problem while the loader raises the first.
 */
import { z } from 'zod';
import { ResrtError } from '../util/errors.js';
import { analyzeImageInput, type ImageAnalysisOptions, isImageInput } from './image-inputs.js';
import { MetaKey } from './onnx-export.js';
import type { ImagePreprocess } from './preprocess.js';

export type Dim = number | string;

export interface IoValue {
  name: string;
  /** onnxruntime type name ('float32', 'int64', ...), or 'non-tensor'. */
  type: string;
  /** Numbers are fixed sizes; strings symbolic ('batch'), '?' unknown. */
  shape: Dim[];
}

export interface IoDescription {
  inputs: IoValue[];
  outputs: IoValue[];
  metadata: Record<string, string>;
}

export interface Problem {
  message: string;
  hint: string;
}

export interface Feed {
  name: string;
  role: 'obs' | 'base_action' | 'obs+base_action';
  /** Column range of this graph input inside a row [obs | base_action]. */
  offset: number;
  width: number;
}

/** Enough to run the graph: what to feed and what to fetch. */
export interface FeedPlan {
  feeds: Feed[];
  /** Row width of the flat buffer: obsDim (+ actionDim for residual actors). */
  inputWidth: number;
  outputName: string;
  /** Set when the file was exported without a dynamic batch axis. */
  fixedBatch: number | null;
  /** Batch used for the probe run. */
  probeBatch: number;
  /** Image inputs of a visuomotor base, each fed from a camera; empty for vector-only graphs. */
  images: ImagePreprocess[];
}

export interface OnnxLayout extends FeedPlan {
  residual: boolean;
  obsDim: number;
  actionDim: number;
  chunkLength: number;
  /** The chunk came flat as [batch, H * A] and resrt.chunk_length said how to split it. */
  flatChunk: boolean;
  outputShape: Dim[];
}

export interface LayoutOptions {
  residual: boolean;
  expectObsDim?: number;
  expectActionDim?: number;
  /** Cameras available and per-input image settings, for graphs with image inputs. */
  images?: ImageAnalysisOptions;
}

const shapeText = (shape: Dim[]): string => `[${shape.join(', ')}]`;

function metaInt(meta: Record<string, string>, key: string): number | undefined {
  if (!(key in meta)) return undefined;
  const v = Number(meta[key]);
  return Number.isInteger(v) && v > 0 ? v : undefined;
}

/** Picks the action output: the only one, else one named like an action, else the first. */
export function chooseOutput(io: IoDescription): IoValue | undefined {
  if (io.outputs.length <= 1) return io.outputs[0];
  return (
    io.outputs.find((o) => /^actions?$/i.test(o.name)) ??
    io.outputs.find((o) => /action/i.test(o.name)) ??
    io.outputs[0]
  );
}

function kindMismatch(meta: Record<string, string>, residual: boolean): Problem | null {
  const kind = meta[MetaKey.kind];
  if (kind === 'residual' && !residual)
    return {
      message: `the file is a residual actor (${MetaKey.kind}=residual), not a base policy`,
      hint: 'pass it as the residual beside its base: `resrt eval --base BASE.onnx --residual FILE`, or `resrt infer FILE --residual`',
    };
  if (kind === 'base' && residual)
    return {
      message: `the file is a base policy (${MetaKey.kind}=base), not a residual actor`,
      hint: 'use it as the base: `resrt eval --base FILE`, or `resrt infer FILE` without --residual; a residual is the residual.onnx that `resrt train` writes',
    };
  return null;
}

/** Input side: which graph input carries what, and its width. */
export function analyzeInputs(
  io: IoDescription,
  options: LayoutOptions,
): { plan?: FeedPlan; problems: Problem[] } {
  const problems: Problem[] = [];
  const meta = io.metadata;
  const names = io.inputs.map((i) => `'${i.name}' ${shapeText(i.shape)}`).join(', ');
  const output = chooseOutput(io);
  if (!output) return { problems: [{ message: 'the graph has no outputs', hint: 're-export the model' }] };
  if (io.inputs.length === 0)
    return {
      problems: [{ message: 'the graph has no inputs', hint: 're-export with the observation as an input' }],
    };
  if (!options.residual && io.inputs.some(isImageInput)) return analyzeVisuomotorInputs(io, options, output);

  // A file of the other kind is the whole story: its dimensions would only mislead.
  const kindProblem = kindMismatch(meta, options.residual);
  if (kindProblem) return { problems: [kindProblem] };

  if (!options.residual && io.inputs.length !== 1) {
    problems.push({
      message: `a base policy must take one observation input, this graph has ${io.inputs.length}: ${names}`,
      hint:
        io.inputs.length === 2
          ? 'if the second input is the base action, load it as a residual actor (--residual); otherwise concatenate the observation parts inside the exported module'
          : 'concatenate the observation parts into one [batch, obs_dim] tensor inside the exported module',
    });
  }
  if (options.residual && io.inputs.length > 2) {
    problems.push({
      message: `a residual actor takes (obs, base_action) or one concatenated input, this graph has ${io.inputs.length}: ${names}`,
      hint: 'export the residual with inputs (obs [batch, obs_dim], base_action [batch, action_dim])',
    });
  }
  if (problems.length) return { problems };

  let fixedBatch: number | null = null;
  const widths: number[] = [];
  for (const input of io.inputs) {
    if (input.type !== 'float32') {
      problems.push({
        message: `input '${input.name}' is ${input.type}; resrt feeds float32 vectors`,
        hint: 'cast the input to float32 in the module (x.float()) before export',
      });
      continue;
    }
    if (input.shape.length !== 2) {
      problems.push({
        message: `input '${input.name}' has shape ${shapeText(input.shape)}; resrt feeds [batch, dim] vectors`,
        hint:
          input.shape.length === 1
            ? "keep a leading batch axis and mark it dynamic: dynamic_axes={'" +
              input.name +
              "': {0: 'batch'}}"
            : 'flatten image/history inputs into one vector per sample inside the exported module',
      });
      continue;
    }
    const [b, d] = input.shape;
    if (typeof b === 'number') {
      if (fixedBatch !== null && fixedBatch !== b)
        problems.push({
          message: `inputs disagree on the batch size (${fixedBatch} vs ${b})`,
          hint: 're-export with a dynamic batch axis',
        });
      fixedBatch = b;
    }
    let width: number | undefined = typeof d === 'number' ? d : undefined;
    if (width === undefined) {
      // A symbolic feature axis: only the metadata or the task can say how wide it is.
      const isAction = options.residual && io.inputs.length === 2 && /act/i.test(input.name);
      width = isAction
        ? (metaInt(meta, MetaKey.actionDim) ?? options.expectActionDim)
        : (metaInt(meta, MetaKey.obsDim) ?? options.expectObsDim);
      if (width === undefined || (options.residual && io.inputs.length === 1)) {
        problems.push({
          message: `input '${input.name}' has a symbolic feature axis ${shapeText(input.shape)} and nothing says its width`,
          hint: `export with a fixed feature size, or add metadata ${MetaKey.obsDim}/${MetaKey.actionDim}`,
        });
        continue;
      }
    }
    widths.push(width);
  }
  if (problems.length) return { problems };

  let feeds: Feed[];
  if (io.inputs.length === 1) {
    feeds = [
      {
        name: io.inputs[0].name,
        role: options.residual ? 'obs+base_action' : 'obs',
        offset: 0,
        width: widths[0],
      },
    ];
  } else {
    // Two inputs: the base action is the one named like an action, else the second.
    const named = io.inputs.map((i) => /act/i.test(i.name));
    const actionIndex = named[0] !== named[1] ? named.indexOf(true) : 1;
    const obsIndex = 1 - actionIndex;
    feeds = [
      { name: io.inputs[obsIndex].name, role: 'obs', offset: 0, width: widths[obsIndex] },
      {
        name: io.inputs[actionIndex].name,
        role: 'base_action',
        offset: widths[obsIndex],
        width: widths[actionIndex],
      },
    ];
  }
  const inputWidth = feeds.reduce((s, f) => s + f.width, 0);
  return {
    plan: { feeds, inputWidth, outputName: output.name, fixedBatch, probeBatch: fixedBatch ?? 1, images: [] },
    problems,
  };
}

/**
 * A base with image inputs (torch.onnx.export of a LeRobot-style policy): at most one state
 * vector ([batch, S], role obs) and image inputs ([batch, 3, H, W] or [batch, H, W, 3]), each
 * mapped to a camera.
 */
function analyzeVisuomotorInputs(
  io: IoDescription,
  options: LayoutOptions,
  output: IoValue,
): { plan?: FeedPlan; problems: Problem[] } {
  const problems: Problem[] = [];
  const images: ImagePreprocess[] = [];
  for (const input of io.inputs.filter(isImageInput)) {
    const r = analyzeImageInput(input, options.images ?? { config: {} });
    if (r.problem) problems.push(r.problem);
    else if (r.spec) images.push(r.spec);
  }
  const vectors = io.inputs.filter((i) => !isImageInput(i));
  if (vectors.length > 1) {
    problems.push({
      message: `a visuomotor base takes one state vector beside its images; it has ${vectors.length}: ${vectors.map((v) => `'${v.name}' ${shapeText(v.shape)}`).join(', ')}`,
      hint: 'concatenate the state parts into one observation.state [batch, S] inside the exported module',
    });
  }
  let fixedBatch: number | null = null;
  for (const input of io.inputs) {
    const b = input.shape[0];
    if (typeof b !== 'number') continue;
    if (fixedBatch !== null && fixedBatch !== b)
      problems.push({
        message: `inputs disagree on the batch size (${fixedBatch} vs ${b})`,
        hint: 're-export with a dynamic batch axis',
      });
    fixedBatch = b;
  }
  const feeds: Feed[] = [];
  const state = vectors.length === 1 ? vectors[0] : undefined;
  if (state) {
    if (state.type !== 'float32' || state.shape.length !== 2) {
      problems.push({
        message: `state input '${state.name}' is ${state.type} ${shapeText(state.shape)}; resrt feeds float32 [batch, S]`,
        hint: 'take observation.state as a float32 [batch, S] tensor',
      });
    } else {
      const d = state.shape[1];
      const width =
        typeof d === 'number' ? d : (metaInt(io.metadata, MetaKey.obsDim) ?? options.expectObsDim);
      if (width === undefined) {
        problems.push({
          message: `state input '${state.name}' has a symbolic width and nothing says how wide it is`,
          hint: `export with a fixed state size, or add metadata ${MetaKey.obsDim}`,
        });
      } else feeds.push({ name: state.name, role: 'obs', offset: 0, width });
    }
  }
  if (problems.length) return { problems };
  const inputWidth = feeds[0]?.width ?? 0;
  return {
    plan: { feeds, inputWidth, outputName: output.name, fixedBatch, probeBatch: fixedBatch ?? 1, images },
    problems,
  };
}

/**
 * Full layout. `probedOutputDims` (from one run) override the graph's declared output shape,
 * which torch leaves partly symbolic for some heads.
 */
export function analyzeLayout(
  io: IoDescription,
  options: LayoutOptions,
  probedOutputDims?: readonly number[],
): { layout?: OnnxLayout; problems: Problem[] } {
  const { plan, problems } = analyzeInputs(io, options);
  if (!plan) return { problems };
  const meta = io.metadata;
  const output = chooseOutput(io) as IoValue;
  if (output.type !== 'float32') {
    problems.push({
      message: `output '${output.name}' is ${output.type}, not float32`,
      hint: 'return float32 actions from the exported module',
    });
    return { problems };
  }
  const shape: Dim[] = probedOutputDims ? [...probedOutputDims] : output.shape;
  const rest = shape.slice(1);
  if (shape.length < 2 || shape.length > 3) {
    problems.push({
      message: `output '${output.name}' has shape ${shapeText(shape)}; resrt expects [batch, A] or [batch, H, A]`,
      hint: 'return actions with a leading batch axis (and an H axis for action chunks)',
    });
    return { problems };
  }
  if (rest.some((d) => typeof d !== 'number')) {
    problems.push({
      message: `output '${output.name}' has a symbolic shape ${shapeText(shape)}`,
      hint: `add metadata ${MetaKey.actionDim} and ${MetaKey.chunkLength}, or export with fixed action sizes`,
    });
    return { problems };
  }
  let actionDim: number;
  let chunkLength: number;
  let flatChunk = false;
  if (shape.length === 3) {
    chunkLength = rest[0] as number;
    actionDim = rest[1] as number;
  } else {
    const width = rest[0] as number;
    const h = metaInt(meta, MetaKey.chunkLength);
    const a = metaInt(meta, MetaKey.actionDim);
    if (!options.residual && h !== undefined && h > 1 && a !== undefined && h * a === width) {
      chunkLength = h;
      actionDim = a;
      flatChunk = true;
    } else {
      chunkLength = 1;
      actionDim = width;
    }
  }
  if (options.residual && chunkLength > 1) {
    problems.push({
      message: `a residual actor must output one action [batch, A]; '${output.name}' is ${shapeText(shape)}`,
      hint: 'residuals act per step; export without an action chunk',
    });
  }

  let obsDim: number;
  if (!options.residual) obsDim = plan.inputWidth;
  else if (plan.feeds.length === 2) {
    obsDim = plan.feeds[0].width;
    const baseWidth = plan.feeds[1].width;
    if (baseWidth !== actionDim) {
      problems.push({
        message: `residual input '${plan.feeds[1].name}' takes ${baseWidth} base-action values but the output has ${actionDim}`,
        hint: 'the residual reads and corrects the same action vector: make both widths the action dim',
      });
    }
  } else {
    obsDim = plan.inputWidth - actionDim;
    if (obsDim <= 0) {
      problems.push({
        message: `the concatenated residual input has ${plan.inputWidth} values, too few for ${actionDim} action dims plus an observation`,
        hint: 'the single input must be [obs, base_action]',
      });
    }
    plan.feeds[0] = { ...plan.feeds[0], width: plan.inputWidth };
  }

  if (options.expectActionDim !== undefined && options.expectActionDim !== actionDim) {
    problems.push({
      message: `output '${output.name}' ${shapeText(shape)} gives ${actionDim} action dims but the robot/task has ${options.expectActionDim}`,
      hint: 'load the policy exported for this robot; action dims (and their order, see resrt.action_names) must match',
    });
  }
  // A visuomotor base without a state input reads only its cameras: any observation width fits.
  const readsState = plan.feeds.length > 0;
  if (readsState && options.expectObsDim !== undefined && options.expectObsDim !== obsDim) {
    const feed = plan.feeds[0];
    problems.push({
      message: `input '${feed.name}' takes ${obsDim} observation values but the task provides ${options.expectObsDim}`,
      hint: 'the task observation must be the one the policy was trained on (compare resrt.obs_names in `resrt inspect`); check --task or re-export',
    });
  }
  const declared: [string, number | undefined, number][] = [
    [MetaKey.actionDim, metaInt(meta, MetaKey.actionDim), actionDim],
    [MetaKey.chunkLength, metaInt(meta, MetaKey.chunkLength), chunkLength],
    [MetaKey.obsDim, metaInt(meta, MetaKey.obsDim), obsDim],
  ];
  for (const [key, value, actual] of declared) {
    if (value !== undefined && value !== actual) {
      problems.push({
        message: `metadata ${key}=${value} contradicts the graph (${actual})`,
        hint: 'the metadata is stale; re-export the model',
      });
    }
  }
  if (problems.length) return { problems };
  return {
    layout: {
      ...plan,
      residual: options.residual,
      obsDim,
      actionDim,
      chunkLength,
      flatChunk,
      outputShape: shape,
    },
    problems,
  };
}

// ---------------------------------------------------------------------------------------------
// Observation normalization: baked into the graph, in metadata, or in a sidecar JSON.

export type NormalizationSource = 'baked' | 'metadata' | 'sidecar' | 'none';

const sidecarSchema = z.object({
  obs_mean: z.array(z.number()),
  obs_std: z.array(z.number()),
});

function checkVectors(mean: number[], std: number[], obsDim: number, where: string): Problem | null {
  if (mean.length !== obsDim || std.length !== obsDim) {
    return {
      message: `${where}: obs_mean/obs_std have ${mean.length}/${std.length} values for obs dim ${obsDim}`,
      hint: 'write the statistics of the observation the policy takes',
    };
  }
  if (mean.some((v) => !Number.isFinite(v)) || std.some((v) => !(Number.isFinite(v) && v > 0))) {
    return {
      message: `${where}: obs_mean must be finite and obs_std finite and positive`,
      hint: 'floor std at a small positive value (e.g. 1e-6) when computing it',
    };
  }
  return null;
}

export function parseNormalization(
  meta: Record<string, string>,
  obsDim: number,
  sidecar: { sidecarPath?: string; sidecarExplicit: boolean; readSidecar: (path: string) => string },
): {
  source: NormalizationSource;
  values: { mean: Float32Array; std: Float32Array } | null;
  problem?: Problem;
} {
  const baked = meta[MetaKey.normalizationBaked] === 'baked';
  const hasMeta = MetaKey.obsMean in meta || MetaKey.obsStd in meta;
  if (baked && (hasMeta || sidecar.sidecarExplicit)) {
    return {
      source: 'baked',
      values: null,
      problem: {
        message:
          'normalization is baked into the graph and also given as metadata or a sidecar; it would be applied twice',
        hint: 'drop the sidecar/metadata statistics, or export without baked normalization',
      },
    };
  }
  if (baked) return { source: 'baked', values: null };
  if (sidecar.sidecarPath && (sidecar.sidecarExplicit || !hasMeta)) {
    const path = sidecar.sidecarPath;
    let parsed: z.infer<typeof sidecarSchema>;
    try {
      parsed = sidecarSchema.parse(JSON.parse(sidecar.readSidecar(path)));
    } catch (err) {
      if (err instanceof ResrtError)
        return { source: 'sidecar', values: null, problem: { message: err.message, hint: err.hint ?? '' } };
      return {
        source: 'sidecar',
        values: null,
        problem: {
          message: `normalization sidecar ${path} is not {"obs_mean": number[], "obs_std": number[]}: ${(err as Error).message.split('\n')[0]}`,
          hint: 'rewrite the sidecar JSON with those two arrays',
        },
      };
    }
    const problem = checkVectors(parsed.obs_mean, parsed.obs_std, obsDim, path);
    if (problem) return { source: 'sidecar', values: null, problem };
    return {
      source: 'sidecar',
      values: { mean: Float32Array.from(parsed.obs_mean), std: Float32Array.from(parsed.obs_std) },
    };
  }
  if (hasMeta) {
    let mean: unknown;
    let std: unknown;
    try {
      mean = JSON.parse(meta[MetaKey.obsMean] ?? 'null');
      std = JSON.parse(meta[MetaKey.obsStd] ?? 'null');
    } catch {
      mean = null;
    }
    const numbers = z.array(z.number());
    const m = numbers.safeParse(mean);
    const s = numbers.safeParse(std);
    if (!m.success || !s.success) {
      return {
        source: 'metadata',
        values: null,
        problem: {
          message: `metadata ${MetaKey.obsMean}/${MetaKey.obsStd} must both be JSON arrays of numbers`,
          hint: 're-export with both keys, or put the statistics in a sidecar JSON and pass --sidecar',
        },
      };
    }
    const problem = checkVectors(m.data, s.data, obsDim, 'metadata');
    if (problem) return { source: 'metadata', values: null, problem };
    return {
      source: 'metadata',
      values: { mean: Float32Array.from(m.data), std: Float32Array.from(s.data) },
    };
  }
  if (meta[MetaKey.normalizationBaked] === 'sidecar') {
    return {
      source: 'none',
      values: null,
      problem: {
        message: `the file keeps its observation normalization in a sidecar (${MetaKey.normalizationBaked}=sidecar) and none was found`,
        hint: 'put the JSON (obs_mean, obs_std) next to the model as <file>.onnx.json or pass --sidecar FILE.json',
      },
    };
  }
  if (meta[MetaKey.normalizationBaked] === 'metadata') {
    return {
      source: 'none',
      values: null,
      problem: {
        message: `the file says its normalization is in metadata (${MetaKey.normalizationBaked}=metadata) but ${MetaKey.obsMean}/${MetaKey.obsStd} are missing and no sidecar was found`,
        hint: 'pass --sidecar FILE.json with obs_mean/obs_std, or re-export',
      },
    };
  }
  return { source: 'none', values: null };
}
