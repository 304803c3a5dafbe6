/**
 * Byte stream -> verified frames. Bytes accumulate until a 0x00 delimiter; anything malformed
 * is counted and dropped, and decoding starts afresh after the next delimiter, so garbage,
 * torn writes and line noise cost at most the frames they touch.
 */
import { cobsDecodeInto } from './cobs.js';
import { parseFrame, type Frame } from './frame.js';
import { MAX_ENCODED, MAX_FRAME } from './protocol.js';

export interface DecoderCounters {
  bytes: number;
  frames: number;
  crcErrors: number;
  /** Delimited runs that are not valid COBS. */
  cobsErrors: number;
  /** Valid COBS but shorter than a header + CRC or longer than a frame. */
  lengthErrors: number;
  /** Runs longer than any frame, skipped up to the next delimiter. */
  oversize: number;
}

/** Why a delimited run was dropped (a device answers each with a NACK). */
export type DropKind = 'crc' | 'cobs' | 'length' | 'oversize';

export class FrameDecoder {
  private readonly buf = new Uint8Array(MAX_ENCODED);
  private readonly raw = new Uint8Array(MAX_FRAME + 2);
  private len = 0;
  private overflow = false;
  readonly counters: DecoderCounters = {
    bytes: 0,
    frames: 0,
    crcErrors: 0,
    cobsErrors: 0,
    lengthErrors: 0,
    oversize: 0,
  };

  /** Feeds a chunk; calls onFrame for every verified frame completed by it, onDrop for every dropped run, in stream order. */
  push(chunk: Uint8Array, onFrame: (frame: Frame) => void, onDrop?: (kind: DropKind) => void): void {
    this.counters.bytes += chunk.length;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b !== 0) {
        if (this.overflow) continue;
        if (this.len >= this.buf.length) {
          this.overflow = true;
          continue;
        }
        this.buf[this.len++] = b;
        continue;
      }
      if (this.overflow) {
        this.overflow = false;
        this.len = 0;
        this.counters.oversize++;
        onDrop?.('oversize');
        continue;
      }
      if (this.len === 0) continue; // repeated delimiters are padding
      const n = cobsDecodeInto(this.buf, 0, this.len, this.raw);
      this.len = 0;
      if (n < 0) {
        this.counters.cobsErrors++;
        onDrop?.('cobs');
        continue;
      }
      const parsed = parseFrame(this.raw, n);
      if (!parsed.ok) {
        if (parsed.error === 'crc') this.counters.crcErrors++;
        else this.counters.lengthErrors++;
        onDrop?.(parsed.error);
        continue;
      }
      this.counters.frames++;
      onFrame(parsed.frame);
    }
  }

  /** Forgets a partial frame (after a reconnect, the old bytes belong to a dead stream). */
  reset(): void {
    this.len = 0;
    this.overflow = false;
  }
}
