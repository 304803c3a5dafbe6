/**
 * The subset of onnx.proto3 that resrt writes and reads, with field numbers exactly as upstream
 * (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto3). Fields not listed here are skipped
 * by the decoder, so foreign files (torch.onnx.export) decode fine.
 */
import protobuf from 'protobufjs';
import { createHash } from 'node:crypto';
import { ResrtError } from './errors.js';

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT64: 7, BOOL: 9 } as const;

/** AttributeProto.AttributeType values used here. */
export const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

const schema = {
  nested: {
    onnx: {
      nested: {
        StringStringEntryProto: {
          fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } },
        },
        OperatorSetIdProto: {
          fields: { domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1 },
            dataType: { type: 'int32', id: 2 },
            floatData: { rule: 'repeated', type: 'float', id: 4 },
            int32Data: { rule: 'repeated', type: 'int32', id: 5 },
            int64Data: { rule: 'repeated', type: 'int64', id: 7 },
            name: { type: 'string', id: 8 },
            rawData: { type: 'bytes', id: 9 },
            doubleData: { rule: 'repeated', type: 'double', id: 10 },
            docString: { type: 'string', id: 12 },
            externalData: { rule: 'repeated', type: 'StringStringEntryProto', id: 13 },
            dataLocation: { type: 'int32', id: 14 },
          },
        },
        AttributeProto: {
          fields: {
            name: { type: 'string', id: 1 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            floats: { rule: 'repeated', type: 'float', id: 7 },
            ints: { rule: 'repeated', type: 'int64', id: 8 },
            type: { type: 'int32', id: 20 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            opType: { type: 'string', id: 4 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            docString: { type: 'string', id: 6 },
            domain: { type: 'string', id: 7 },
          },
        },
        TensorShapeProto: {
          fields: { dim: { rule: 'repeated', type: 'Dimension', id: 1 } },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: {
                dimValue: { type: 'int64', id: 1 },
                dimParam: { type: 'string', id: 2 },
                denotation: { type: 'string', id: 3 },
              },
            },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType'] } },
          fields: { tensorType: { type: 'Tensor', id: 1 }, denotation: { type: 'string', id: 6 } },
          nested: {
            Tensor: {
              fields: {
                elemType: { type: 'int32', id: 1 },
                shape: { type: 'TensorShapeProto', id: 2 },
              },
            },
          },
        },
        ValueInfoProto: {
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
            docString: { type: 'string', id: 3 },
          },
        },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            docString: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            valueInfo: { rule: 'repeated', type: 'ValueInfoProto', id: 13 },
          },
        },
        ModelProto: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            producerName: { type: 'string', id: 2 },
            producerVersion: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            modelVersion: { type: 'int64', id: 5 },
            docString: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        /**
         * The model without its graph body: what `inspect` and the loader need (I/O, opsets,
         * metadata), decoded without touching megabytes of initializers.
         */
        ModelHeader: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            producerName: { type: 'string', id: 2 },
            producerVersion: { type: 'string', id: 3 },
            graph: { type: 'GraphHeader', id: 7 },
            opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        GraphHeader: {
          fields: {
            name: { type: 'string', id: 2 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
          },
        },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(schema);
const ModelProto = root.lookupType('onnx.ModelProto');
const ModelHeader = root.lookupType('onnx.ModelHeader');

// ---------------------------------------------------------------------------------------------
// Plain-object shapes of the messages (camelCase field names, as protobufjs uses them).

export interface OnnxTensor {
  name: string;
  dims: number[];
  dataType: number;
  rawData?: Uint8Array;
  floatData?: number[];
  int64Data?: number[];
  /** With dataLocation 1 (EXTERNAL): location, offset, length of the bytes in a side file. */
  externalData?: { key: string; value: string }[];
  dataLocation?: number;
}

export interface OnnxAttribute {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  floats?: number[];
  ints?: number[];
}

export interface OnnxNode {
  name: string;
  opType: string;
  input: string[];
  output: string[];
  attribute?: OnnxAttribute[];
  domain?: string;
}

export interface OnnxDim {
  dimValue?: number;
  dimParam?: string;
}

export interface OnnxValueInfo {
  name: string;
  type?: { tensorType?: { elemType?: number; shape?: { dim?: OnnxDim[] } } };
}

export interface OnnxGraph {
  name: string;
  node: OnnxNode[];
  initializer: OnnxTensor[];
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number;
  producerName?: string;
  producerVersion?: string;
  opsetImport: { domain?: string; version: number }[];
  graph: OnnxGraph;
  metadataProps?: { key: string; value: string }[];
}

export interface OnnxModelHeader {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsetImport: { domain: string; version: number }[];
  graph: { name: string; input: OnnxValueInfo[]; output: OnnxValueInfo[] };
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Builders

export function floatTensor(name: string, dims: number[], data: ArrayLike<number>): OnnxTensor {
  const values = Float32Array.from(data);
  const expected = dims.reduce((a, b) => a * b, 1);
  if (values.length !== expected) {
    throw new Error(`tensor ${name}: ${values.length} values for dims [${dims.join(', ')}]`);
  }
  // raw_data is little-endian by the ONNX spec; Float32Array is host order, so write explicitly.
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  return { name, dims, dataType: DataType.FLOAT, rawData: raw };
}

export function int64Tensor(name: string, values: number[]): OnnxTensor {
  const raw = new Uint8Array(values.length * 8);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < values.length; i++) view.setBigInt64(i * 8, BigInt(values[i]), true);
  return { name, dims: [values.length], dataType: DataType.INT64, rawData: raw };
}

export const attr = {
  int: (name: string, i: number): OnnxAttribute => ({ name, type: AttributeType.INT, i }),
  float: (name: string, f: number): OnnxAttribute => ({ name, type: AttributeType.FLOAT, f }),
  ints: (name: string, ints: readonly number[]): OnnxAttribute => ({
    name,
    type: AttributeType.INTS,
    ints: [...ints],
  }),
  string: (name: string, s: string): OnnxAttribute => ({
    name,
    type: AttributeType.STRING,
    s: new TextEncoder().encode(s),
  }),
};

/** A tensor value of the given element type; string dims are symbolic (e.g. a batch axis). */
export function tensorValueInfo(
  name: string,
  elemType: number,
  dims: readonly (number | string)[],
): OnnxValueInfo {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** A float tensor value; string dims are symbolic, e.g. a batch axis first: [batch, ...rest]. */
export function floatValueInfo(name: string, dims: (number | string)[]): OnnxValueInfo {
  return tensorValueInfo(name, DataType.FLOAT, dims);
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

export function encodeModel(model: OnnxModel): Uint8Array {
  const message = ModelProto.fromObject(model as unknown as Record<string, unknown>);
  return ModelProto.encode(message).finish();
}

/** Full decode (graph body included); used by tests and tools, not on the hot path. */
export function decodeModel(bytes: Uint8Array): OnnxModel {
  const message = ModelProto.decode(bytes);
  return ModelProto.toObject(message, { longs: Number, arrays: true, defaults: false }) as OnnxModel;
}

/**
 * Decodes I/O, opsets and metadata only. Throws a ResrtError when the bytes are not an ONNX model,
 * which protobuf alone cannot tell: almost any byte string parses as *some* message, so we also
 * require an IR version, a graph and at least one opset.
 */
export function decodeModelHeader(bytes: Uint8Array, source: string): OnnxModelHeader {
  const notOnnx = (why: string): ResrtError =>
    new ResrtError(
      `${source} is not an ONNX model (${why})`,
      'pass a .onnx file written by torch.onnx.export, `resrt bc` or `resrt train`; check that the path points at the model, not a checkpoint (.pt/.pth/.safetensors) or a sidecar JSON',
    );
  let obj: Record<string, unknown>;
  try {
    const message = ModelHeader.decode(bytes);
    obj = ModelHeader.toObject(message, { longs: Number, arrays: true, defaults: true });
  } catch (err) {
    throw notOnnx(`protobuf decoding failed: ${(err as Error).message}`);
  }
  const header = obj as unknown as {
    irVersion: number;
    producerName: string;
    producerVersion: string;
    opsetImport: { domain: string; version: number }[];
    graph?: { name: string; input: OnnxValueInfo[]; output: OnnxValueInfo[] } | null;
    metadataProps: { key: string; value: string }[];
  };
  if (!header.irVersion || header.irVersion < 3 || header.irVersion > 64) {
    throw notOnnx(`no plausible ir_version (${header.irVersion})`);
  }
  if (!header.graph || header.graph.output.length === 0) throw notOnnx('no graph with outputs');
  if (header.opsetImport.length === 0) throw notOnnx('no opset_import');
  const metadata: Record<string, string> = {};
  for (const { key, value } of header.metadataProps) metadata[key] = value;
  return {
    irVersion: header.irVersion,
    producerName: header.producerName,
    producerVersion: header.producerVersion,
    opsetImport: header.opsetImport,
    graph: header.graph,
    metadata,
  };
}

/**
 * The serialized bytes of ModelProto field 7 (the graph), located by walking the top-level
 * fields. `resrt.checksum` hashes exactly these bytes, so metadata edits do not change it but
 * any change to weights or topology does.
 */
export function graphBytes(bytes: Uint8Array): Uint8Array | null {
  const reader = protobuf.Reader.create(bytes);
  let found: Uint8Array | null = null;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 7 && wire === 2) {
      const len = reader.uint32();
      found = bytes.subarray(reader.pos, reader.pos + len);
      reader.pos += len;
    } else {
      reader.skipType(wire);
    }
  }
  return found;
}

export function graphChecksum(bytes: Uint8Array): string | null {
  const graph = graphBytes(bytes);
  return graph ? `sha256:${createHash('sha256').update(graph).digest('hex')}` : null;
}

/** Shape of a value as numbers (fixed) or strings (symbolic); null when the file leaves it unknown. */
export function valueShape(info: OnnxValueInfo): (number | string)[] | null {
  const dims = info.type?.tensorType?.shape?.dim;
  if (!dims) return null;
  return dims.map((d) =>
    d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== 0 ? d.dimValue : '?',
  );
}
