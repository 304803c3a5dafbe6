/** `resrt inspect FILE.onnx` and `resrt infer FILE.onnx`: what a policy file is and whether it fits. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { ResrtError } from '../util/errors.js';
import { MetaKey } from './onnx-export.js';
import {
  analyzeInputs,
  analyzeLayout,
  type IoValue,
  type NormalizationSource,
  parseNormalization,
} from './onnx-layout.js';
import { createSession, describeIo, OnnxPolicy, readModelFile, runRaw } from './onnx-policy.js';
import { decodeModelHeader, graphChecksum } from './onnx-proto.js';

export interface InspectReport {
  path: string;
  sizeBytes: number;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producer: string;
  inputs: IoValue[];
  outputs: IoValue[];
  /** From resrt.kind, else guessed from the inputs (two inputs: residual). */
  kind: 'base' | 'residual';
  obsDim: number | null;
  actionDim: number | null;
  chunkLength: number | null;
  /** Batch axis is symbolic (any batch size runs). */
  dynamicBatch: boolean;
  normalization: NormalizationSource;
  checksum: 'ok' | 'mismatch' | 'absent';
  metadata: Record<string, string>;
  /** Whether the file loads and fits the task (when given); `problems` says why not. */
  fits: boolean;
  problems: { message: string; hint: string }[];
}

export async function inspectOnnx(
  path: string,
  task?: { obsDim: number; actionDim: number },
): Promise<InspectReport> {
  const bytes = readModelFile(path);
  const header = decodeModelHeader(bytes, path);
  const meta = header.metadata;
  const expected = meta[MetaKey.checksum];
  const checksum: InspectReport['checksum'] = !expected
    ? 'absent'
    : graphChecksum(bytes) === expected
      ? 'ok'
      : 'mismatch';
  const session = await createSession(path, 1);
  try {
    const io = describeIo(header, session);
    const kind: InspectReport['kind'] =
      meta[MetaKey.kind] === 'residual' || meta[MetaKey.kind] === 'base'
        ? (meta[MetaKey.kind] as InspectReport['kind'])
        : io.inputs.length === 2
          ? 'residual'
          : 'base';
    // The file's own layout first (what it is), then against the task (whether it fits): a file
    // that does not fit still shows its own dimensions and normalization.
    const own = { residual: kind === 'residual' };
    const options = { ...own, expectObsDim: task?.obsDim, expectActionDim: task?.actionDim };
    const problems: InspectReport['problems'] = [];
    if (checksum === 'mismatch')
      problems.push({
        message: 'the graph does not match resrt.checksum (modified or truncated after export)',
        hint: 're-export or copy the file again',
      });
    let probedDims: readonly number[] | undefined;
    const inputs = analyzeInputs(io, own);
    if (inputs.plan) {
      try {
        const plan = inputs.plan;
        probedDims = (
          await runRaw(session, plan, new Float32Array(plan.inputWidth * plan.probeBatch), plan.probeBatch)
        ).dims;
      } catch (err) {
        problems.push({
          message: (err as Error).message,
          hint: err instanceof ResrtError ? (err.hint ?? '') : '',
        });
      }
    }
    const analysis = analyzeLayout(io, own, probedDims);
    problems.push(...analysis.problems);
    if (task && analysis.layout) {
      const known = new Set(problems.map((p) => p.message));
      problems.push(...analyzeLayout(io, options, probedDims).problems.filter((p) => !known.has(p.message)));
    }
    let normalization: NormalizationSource = 'none';
    if (analysis.layout) {
      const sidecarPath = existsSync(`${path}.json`) ? `${path}.json` : undefined;
      const norm = parseNormalization(meta, analysis.layout.obsDim, {
        sidecarPath,
        sidecarExplicit: false,
        readSidecar: (p) => readFileSync(p, 'utf8'),
      });
      normalization = norm.source;
      if (norm.problem) problems.push(norm.problem);
    }
    const firstInput = io.inputs[0]?.shape[0];
    return {
      path,
      sizeBytes: statSync(path).size,
      irVersion: header.irVersion,
      opsets: header.opsetImport.map((o) => ({ domain: o.domain || 'ai.onnx', version: o.version })),
      producer: [header.producerName, header.producerVersion].filter(Boolean).join(' '),
      inputs: io.inputs,
      outputs: io.outputs,
      kind,
      obsDim: analysis.layout?.obsDim ?? null,
      actionDim: analysis.layout?.actionDim ?? null,
      chunkLength: analysis.layout?.chunkLength ?? null,
      dynamicBatch: typeof firstInput === 'string',
      normalization,
      checksum,
      metadata: meta,
      fits: problems.length === 0,
      problems,
    };
  } finally {
    await session.release();
  }
}

export function formatInspectReport(r: InspectReport): string {
  const shape = (v: IoValue): string => `  ${v.name.padEnd(16)} ${v.type.padEnd(8)} [${v.shape.join(', ')}]`;
  const lines = [
    `${r.path} (${(r.sizeBytes / 1024).toFixed(1)} KiB, IR ${r.irVersion}, opset ${r.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}${r.producer ? `, by ${r.producer}` : ''})`,
    `kind: ${r.kind}   obs dim: ${r.obsDim ?? '?'}   action dim: ${r.actionDim ?? '?'}   chunk length: ${r.chunkLength ?? '?'}   batch: ${r.dynamicBatch ? 'dynamic' : 'fixed'}`,
    `normalization: ${r.normalization}   checksum: ${r.checksum}`,
    'inputs:',
    ...r.inputs.map(shape),
    'outputs:',
    ...r.outputs.map(shape),
  ];
  const keys = Object.keys(r.metadata).sort();
  if (keys.length) {
    lines.push('metadata:');
    for (const k of keys) {
      const v = r.metadata[k];
      lines.push(`  ${k} = ${v.length > 100 ? `${v.slice(0, 97)}...` : v}`);
    }
  }
  if (r.fits) lines.push('fits: yes');
  else {
    lines.push('fits: NO');
    for (const p of r.problems) lines.push(`  - ${p.message}${p.hint ? `\n    fix: ${p.hint}` : ''}`);
  }
  return lines.join('\n');
}

/**
 * One forward pass: `obs` (for residual actors: obs followed by the base action) -> the chunk as
 * H rows of A actions (one row for plain policies).
 */
export async function inferOnce(
  path: string,
  obs: number[],
  options: { residual?: boolean; sidecarPath?: string } = {},
): Promise<number[][]> {
  const policy = await OnnxPolicy.load(path, {
    residual: options.residual,
    sidecarPath: options.sidecarPath,
    warmupRuns: 0,
  });
  try {
    const { obsDim, actionDim, chunkLength, residual } = policy.layout;
    const want = residual ? obsDim + actionDim : obsDim;
    if (obs.length !== want) {
      throw new ResrtError(
        `${path} takes ${want} values${residual ? ` (${obsDim} observation + ${actionDim} base action)` : ''}, got ${obs.length}`,
        `pass exactly ${want} comma-separated numbers`,
      );
    }
    const x = Float32Array.from(obs);
    const flat = residual
      ? await policy.residual(x.subarray(0, obsDim), x.subarray(obsDim))
      : await policy.runChunk(x);
    const rows: number[][] = [];
    for (let h = 0; h < chunkLength; h++)
      rows.push(Array.from(flat.subarray(h * actionDim, (h + 1) * actionDim)));
    return rows;
  } finally {
    await policy.close();
  }
}
