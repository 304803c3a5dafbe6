/**
 * A packed segment: a sealed segment of a record log, compressed for keeping (the learner's
 * write-ahead log is the session's dataset, so its old segments are compacted, never dropped).
 * The pack holds the segment's bytes exactly, in order, so whoever reads it sees the same records
 * as in the original file, whatever their payloads are (batch format, frames, ...).
 *
 *   pack   = record(1, header JSON) | record(2, chunk) | record(2, chunk) | ...   (record-frame.ts)
 *   header = { format: 1, codec: 'deflate-raw', segment, rawBytes, rawCrc32, records }
 *   chunk  = deflate-raw of the next ≤ 1 MiB of the segment
 *
 * deflate level 1: on reach transitions levels 6 and 9 keep hardly fewer bytes at the same or a
 * tenth of the speed (bench/session-storage.ts); LZ77 finds the step-to-step repeats (a step's
 * nextObs is the next step's obs, its nextBaseAction the next step's baseAction).
 */
import { crc32, deflateRaw, inflateRaw, inflateRawSync } from 'node:zlib';
import { promisify } from 'node:util';
import { frameRecord, parseRecords } from './record-frame.js';

const PACK_HEADER = 1;
const PACK_CHUNK = 2;
const CHUNK_BYTES = 1 << 20;

export interface PackHeader {
  format: 1;
  codec: 'deflate-raw';
  segment: number;
  rawBytes: number;
  rawCrc32: number;
  records: number;
}

const deflateAsync = promisify(deflateRaw);
const inflateAsync = promisify(inflateRaw);

/** Compresses a whole, intact segment of `records` records (on the thread pool). */
export async function packSegment(raw: Buffer, segment: number, records: number): Promise<Buffer> {
  const header: PackHeader = {
    format: 1,
    codec: 'deflate-raw',
    segment,
    rawBytes: raw.byteLength,
    rawCrc32: crc32(raw),
    records,
  };
  const parts = [frameRecord(PACK_HEADER, Buffer.from(JSON.stringify(header)))];
  for (let o = 0; o < raw.byteLength; o += CHUNK_BYTES) {
    const chunk = await deflateAsync(raw.subarray(o, Math.min(raw.byteLength, o + CHUNK_BYTES)), {
      level: 1,
    });
    parts.push(frameRecord(PACK_CHUNK, chunk));
  }
  return Buffer.concat(parts);
}

/** A pack that does not hold what its header promises. */
export class PackError extends Error {}

function parsePack(pack: Buffer, segment: number): { header: PackHeader; chunks: Uint8Array[] } {
  const { records, goodEnd } = parseRecords(pack, segment);
  if (goodEnd !== pack.byteLength) throw new PackError(`bad record at byte ${goodEnd}`);
  if (records.length === 0 || records[0].type !== PACK_HEADER) throw new PackError('no pack header');
  let header: PackHeader;
  try {
    header = JSON.parse(Buffer.from(records[0].payload).toString('utf8')) as PackHeader;
  } catch {
    throw new PackError('the pack header is not JSON');
  }
  if (header.format !== 1 || header.codec !== 'deflate-raw')
    throw new PackError(`pack format ${String(header.format)}/${String(header.codec)} is unknown`);
  if (header.segment !== segment) throw new PackError(`it holds segment ${header.segment}`);
  const chunks = records.slice(1).map((r) => {
    if (r.type !== PACK_CHUNK) throw new PackError(`record type ${r.type} in a pack`);
    return r.payload;
  });
  return { header, chunks };
}

function checkRaw(raw: Buffer, header: PackHeader): Buffer {
  if (raw.byteLength !== header.rawBytes)
    throw new PackError(`${raw.byteLength} bytes inflated, the header says ${header.rawBytes}`);
  if (crc32(raw) !== header.rawCrc32) throw new PackError('CRC-32 of the inflated segment differs');
  const { records, goodEnd } = parseRecords(raw, header.segment);
  if (goodEnd !== raw.byteLength || records.length !== header.records)
    throw new PackError(`${records.length} records inflated, the header says ${header.records}`);
  return raw;
}

/** The segment's bytes from a pack (synchronous: a log is opened synchronously). */
export function unpackSegment(pack: Buffer, segment: number): Buffer {
  const { header, chunks } = parsePack(pack, segment);
  let raw: Buffer;
  try {
    raw = Buffer.concat(chunks.map((c) => inflateRawSync(c)));
  } catch (err) {
    throw new PackError(`a chunk does not inflate (${(err as Error).message})`);
  }
  return checkRaw(raw, header);
}

/** unpackSegment on the thread pool, for checking a pack before it replaces its segment. */
export async function unpackSegmentAsync(pack: Buffer, segment: number): Promise<Buffer> {
  const { header, chunks } = parsePack(pack, segment);
  const parts: Buffer[] = [];
  try {
    for (const c of chunks) parts.push(await inflateAsync(c));
  } catch (err) {
    throw new PackError(`a chunk does not inflate (${(err as Error).message})`);
  }
  return checkRaw(Buffer.concat(parts), header);
}
