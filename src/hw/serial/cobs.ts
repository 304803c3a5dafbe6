/**
 * Consistent Overhead Byte Stuffing: removes every 0x00 so that 0x00 can delimit frames.
 * Minimal variant: a full 254-byte block opens a new block only when more input follows
 * (identical bytes to the C core's rp_cobs_encode).
 */

export function cobsMaxEncodedLength(length: number): number {
  return length + 1 + Math.floor(length / 254);
}

/**
 * COBS of src, followed by `zeros` 0x00 bytes (1: the frame delimiter, written in the same buffer
 * so that a frame on the host's send path costs one allocation here, not two and a copy).
 */
export function cobsEncode(src: Uint8Array, zeros = 0): Uint8Array {
  const dst = new Uint8Array(cobsMaxEncodedLength(src.length) + zeros);
  let codeIdx = 0;
  let o = 1;
  let code = 1;
  for (let i = 0; i < src.length; i++) {
    const b = src[i];
    if (b === 0) {
      dst[codeIdx] = code;
      codeIdx = o++;
      code = 1;
    } else {
      dst[o++] = b;
      code++;
      if (code === 0xff && i + 1 < src.length) {
        dst[codeIdx] = code;
        codeIdx = o++;
        code = 1;
      }
    }
  }
  dst[codeIdx] = code;
  return dst.subarray(0, o + zeros);
}

/**
 * Decodes src[start, end) into out; returns the decoded length, or -1 when the input is not valid
 * COBS or does not fit. Allocation-free because the stream decoder calls it once per frame.
 */
export function cobsDecodeInto(src: Uint8Array, start: number, end: number, out: Uint8Array): number {
  let i = start;
  let o = 0;
  while (i < end) {
    const code = src[i++];
    if (code === 0) return -1;
    for (let k = 1; k < code; k++) {
      if (i >= end || o >= out.length) return -1;
      const b = src[i++];
      if (b === 0) return -1;
      out[o++] = b;
    }
    if (code !== 0xff && i < end) {
      if (o >= out.length) return -1;
      out[o++] = 0;
    }
  }
  return o;
}

/** Convenience form for tests and one-off use; null on malformed input. */
export function cobsDecode(src: Uint8Array): Uint8Array | null {
  const out = new Uint8Array(src.length);
  const n = cobsDecodeInto(src, 0, src.length, out);
  return n < 0 ? null : out.slice(0, n);
}
