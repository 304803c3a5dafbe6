/**
 * Which frozen encoder a camera run uses when its config leaves the choice open (encoder 'auto')
 * or asks for one trained from the demonstrations (encoder 'state'). The state encoder itself is
 * trained by the caller's `StateEncoderSource` (the CLI hands in src/sim's trainer: `residual`
 * never imports `sim`); from here on it is a `file` encoder like any other, and the exported
 * residual carries it.
 */
import type { Env } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { ResidualConfig } from './config.js';

export interface StateEncoderSource {
  /** Why these demonstrations cannot train a state encoder; null when they can. */
  readonly unavailable: string | null;
  /** Trains the encoder into the run folder and returns its path. */
  prepare(outDir: string, log: (line: string) => void): Promise<string>;
}

/** What a resumed run's checkpoint says its encoder settled on. */
export type SettledEncoder = Pick<ResidualConfig, 'encoder' | 'encoderFile'>;

/**
 * The config with 'auto' and 'state' settled: 'file' (the trained encoder) or 'base-embedding'.
 * A resumed run (`settledBefore`, from its checkpoint) keeps what it settled on: its features
 * mean nothing with another encoder.
 */
export async function settleEncoder(
  cfg: ResidualConfig,
  env: Pick<Env, 'id' | 'cameras'>,
  source: StateEncoderSource | undefined,
  run: { outDir: string; settledBefore: SettledEncoder | null },
  log: (line: string) => void,
): Promise<ResidualConfig> {
  if (cfg.encoder !== 'auto' && cfg.encoder !== 'state') return cfg;
  // A state-only task reads no camera features, whatever the mode.
  if ((env.cameras ?? []).length === 0) return cfg;
  const before = run.settledBefore;
  if (before?.encoder === 'file' && before.encoderFile) {
    log(`state encoder: ${before.encoderFile}, trained by this run before it was resumed`);
    return { ...cfg, encoder: 'file', encoderFile: before.encoderFile };
  }
  if (cfg.encoder === 'auto' && before?.encoder === 'base-embedding') {
    log('encoder auto → base-embedding, as this run settled before it was resumed');
    return { ...cfg, encoder: 'base-embedding' };
  }
  const why = source ? source.unavailable : 'no demonstrations were given (--demos)';
  if (why !== null) {
    if (cfg.encoder === 'state') {
      throw new ResrtError(
        `encoder state trains an encoder from demonstrations that recorded what the cameras show, and ${why}`,
        `collect demonstrations on a simulated camera task (e.g. \`resrt collect --task push-cam --episodes 400 --out demos.jsonl\`) and pass --demos, or choose --encoder base-embedding or --encoder file --encoder-file ENCODER.onnx`,
      );
    }
    log(`encoder auto → base-embedding: no state encoder, since ${why}`);
    return { ...cfg, encoder: 'base-embedding' };
  }
  const encoderFile = await source!.prepare(run.outDir, log);
  log(`encoder ${cfg.encoder} → file ${encoderFile} (a state encoder trained from the demonstrations)`);
  return { ...cfg, encoder: 'file', encoderFile };
}
