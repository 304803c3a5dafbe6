/**
 * Camera frames held as uint8 (H×W×3, row-major, as cameras give them) become a float minibatch
 * [B, 3, H, W] in [0, 1] only when a batch is drawn: a few hundred demonstrations of 84×84 frames
 * are hundreds of MB as bytes and four times that as floats.
 *
 * Random shift (DrQ): each image is padded by `pad` pixels on every side, repeating its edge
 * pixels, and cropped back to H×W at a random offset in [0, 2·pad]², i.e. shifted by up to `pad`
 * pixels each way. The padding and crop are folded into one read with clamped indices.
 */
import type { Rng } from '../util/rng.js';

/** A store of same-sized RGB frames, one per sample: `data` holds `count` frames of H×W×3 bytes. */
export interface FrameStore {
  height: number;
  width: number;
  data: Uint8Array;
  count: number;
}

/** One shift per row: [dx0, dy0, dx1, dy1, …], each in [−pad, pad]. */
export function randomShifts(
  rng: Rng,
  rows: number,
  pad: number,
  out: Int32Array = new Int32Array(2 * rows),
): Int32Array {
  if (!Number.isInteger(pad) || pad < 0)
    throw new Error(`random shift: pad ${pad} is not a whole number ≥ 0`);
  for (let i = 0; i < 2 * rows; i++) out[i] = pad === 0 ? 0 : rng.int(2 * pad + 1) - pad;
  return out;
}

/**
 * Writes frames `indices[k]` of `store` into `out` as [rows, 3, H, W] float32 in [0, 1]:
 *   out[k, c, y, x] = store[indices[k]][clamp(y + dy_k), clamp(x + dx_k), c] / 255
 * with (dx_k, dy_k) from `shifts` (no shift when omitted) and clamp to the image (edge replicate).
 */
export function framesToBatch(
  store: FrameStore,
  indices: ArrayLike<number>,
  out: Float32Array,
  shifts?: Int32Array,
  rows = indices.length,
): void {
  const { height: H, width: W, data } = store;
  const plane = H * W;
  const frame = plane * 3;
  if (out.length < rows * frame)
    throw new Error(`framesToBatch: ${out.length} floats for ${rows} images of 3x${H}x${W}`);
  const scale = 1 / 255;
  const xs = new Int32Array(W);
  for (let k = 0; k < rows; k++) {
    const index = indices[k];
    if (!(index >= 0 && index < store.count))
      throw new Error(`framesToBatch: frame ${index} of ${store.count}`);
    const src = index * frame;
    const dx = shifts ? shifts[2 * k] : 0;
    const dy = shifts ? shifts[2 * k + 1] : 0;
    for (let x = 0; x < W; x++) xs[x] = 3 * Math.min(W - 1, Math.max(0, x + dx));
    const dst = k * frame;
    for (let y = 0; y < H; y++) {
      const row = src + 3 * W * Math.min(H - 1, Math.max(0, y + dy));
      const o = dst + y * W;
      for (let x = 0; x < W; x++) {
        const s = row + xs[x];
        out[o + x] = data[s] * scale;
        out[o + plane + x] = data[s + 1] * scale;
        out[o + 2 * plane + x] = data[s + 2] * scale;
      }
    }
  }
}
