/**
 * Parquet files through maintained pure-JS packages: hyparquet reads (Snappy built in),
 * hyparquet-writer writes (Snappy by default). Columns of numbers come back as numbers (INT64 as
 * bigint is turned into number), lists as arrays.
 */
import { readFileSync } from 'node:fs';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { ResrtError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/files.js';

export type Row = Record<string, unknown>;

export async function readParquet(path: string): Promise<{ rows: Row[]; metadata: Record<string, string> }> {
  const buf = readFileSync(path);
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  try {
    const md = parquetMetadata(file);
    const rows = (await parquetReadObjects({ file })) as Row[];
    const metadata = Object.fromEntries((md.key_value_metadata ?? []).map((kv) => [kv.key, kv.value ?? '']));
    return { rows: rows.map(toNumbers), metadata };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new ResrtError(
      `cannot read Parquet file ${path}: ${message}`,
      /compression|codec/i.test(message)
        ? "resrt reads Snappy-compressed (LeRobot's default) and uncompressed Parquet; re-save the file with Snappy"
        : 'check that the file is a complete Parquet file (an interrupted download leaves a torn one)',
    );
  }
}

function toNumbers(row: Row): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) {
    if (typeof v === 'bigint') out[k] = Number(v);
    else if (Array.isArray(v)) out[k] = v.map((x) => (typeof x === 'bigint' ? Number(x) : x));
    else out[k] = v;
  }
  return out;
}

/** A column and its Parquet type: scalars, or lists (LeRobot's vector features). */
export interface Column {
  name: string;
  type: 'FLOAT' | 'DOUBLE' | 'INT64' | 'BOOLEAN' | 'STRING';
  list?: boolean;
  data: unknown[];
}

/** Writes columns as an optional-field schema, lists in the standard three-level LIST layout. */
export function writeParquet(path: string, columns: Column[], kvMetadata: Record<string, string> = {}): void {
  const schema: Record<string, unknown>[] = [{ name: 'root', num_children: columns.length }];
  for (const c of columns) {
    const leaf = (name: string): Record<string, unknown> =>
      c.type === 'STRING'
        ? { name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' }
        : { name, type: c.type, repetition_type: 'OPTIONAL' };
    if (c.list) {
      schema.push(
        { name: c.name, repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        leaf('element'),
      );
    } else schema.push(leaf(c.name));
  }
  const data = columns.map((c) => ({
    name: c.name,
    data:
      c.type === 'INT64'
        ? c.data.map((v) => (c.list ? (v as number[]).map(BigInt) : BigInt(v as number)))
        : c.data,
  }));
  const buffer = parquetWriteBuffer({
    columnData: data as never,
    schema: schema as never,
    kvMetadata: Object.entries(kvMetadata).map(([key, value]) => ({ key, value })),
  });
  writeFileAtomic(path, new Uint8Array(buffer));
}
