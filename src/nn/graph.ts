/**
 * A static-shape ONNX graph under construction, plus the tape that reverse-mode autodiff walks.
 *
 * Values carry their shape and element type, known when they are created (every shape in a
 * training graph is fixed: batch sizes are part of the graph), so broadcasting, reductions and
 * gradient shapes are settled here in TypeScript rather than discovered by onnxruntime. Ops
 * (ops.ts) emit ONNX nodes and, when differentiable, a tape entry with their backward rule;
 * `grad` (autodiff.ts) appends the backward nodes to the same graph, so one `session.run` computes
 * a loss, its gradients and whatever the caller builds from them (an optimizer step).
 */
import {
  DataType,
  encodeModel,
  floatTensor,
  tensorValueInfo,
  type OnnxAttribute,
  type OnnxNode,
  type OnnxTensor,
} from '../util/onnx-proto.js';

/** Opset of every graph the engine builds (LayerNormalization needs 17). */
export const NN_OPSET = 17;
const IR_VERSION = 8;

export type DType = 'float32' | 'int64' | 'bool';

const elemType: Record<DType, number> = {
  float32: DataType.FLOAT,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};

export class Value {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly name: string,
    readonly shape: readonly number[],
    readonly dtype: DType,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  toString(): string {
    return `${this.name}[${this.shape.join(',')}]`;
  }
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** One differentiable op: its inputs, its output and the rule that maps the output's gradient back. */
export interface TapeEntry {
  readonly op: string;
  readonly inputs: readonly Value[];
  readonly output: Value;
  /**
   * Gradients of the inputs whose `need` flag is set (null elsewhere), given the gradient `gy` of
   * the output. Built from the same ops, so the backward pass is part of the graph.
   */
  readonly backward: (gy: Value, need: readonly boolean[]) => (Value | null)[];
}

export interface OutputSpec {
  shape: readonly number[];
  dtype?: DType;
}

export class Graph {
  readonly tape: TapeEntry[] = [];
  private readonly nodes: OnnxNode[] = [];
  private readonly initializers: OnnxTensor[] = [];
  private readonly inputs: Value[] = [];
  private readonly outputs: { name: string; value: Value }[] = [];
  private readonly constants = new Map<string, Value>();
  private readonly names = new Set<string>();
  private next = 0;

  constructor(readonly name = 'resrt_nn') {}

  private fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.next++}`;
    while (this.names.has(name));
    this.names.add(name);
    return name;
  }

  private claim(name: string, what: string): void {
    if (this.names.has(name)) throw new Error(`graph ${this.name}: ${what} name '${name}' is taken`);
    this.names.add(name);
  }

  /** A graph input fed at every run. */
  input(name: string, shape: readonly number[], dtype: DType = 'float32'): Value {
    this.claim(name, 'input');
    const v = new Value(this, this.next++, name, [...shape], dtype);
    this.inputs.push(v);
    return v;
  }

  /** A float constant stored in the model (an initializer). */
  constant(values: ArrayLike<number>, shape: readonly number[]): Value {
    if (values.length !== sizeOf(shape))
      throw new Error(`constant of shape [${shape.join(',')}] given ${values.length} values`);
    const name = this.fresh('const');
    this.initializers.push(floatTensor(name, [...shape], values));
    return new Value(this, this.next++, name, [...shape], 'float32');
  }

  /** A float scalar constant, shared by every use of the same number. */
  scalar(x: number): Value {
    const key = `f:${Object.is(x, -0) ? '-0' : String(x)}`;
    let v = this.constants.get(key);
    if (!v) {
      v = this.constant([x], []);
      this.constants.set(key, v);
    }
    return v;
  }

  /** A 1-D int64 constant (shapes, axes, pads, indices), shared by equal lists. */
  ints(values: readonly number[]): Value {
    const key = `i:${values.join(',')}`;
    let v = this.constants.get(key);
    if (!v) {
      const name = this.fresh('ints');
      const raw = new Uint8Array(values.length * 8);
      const view = new DataView(raw.buffer);
      values.forEach((x, i) => view.setBigInt64(i * 8, BigInt(x), true));
      this.initializers.push({ name, dims: [values.length], dataType: DataType.INT64, rawData: raw });
      v = new Value(this, this.next++, name, [values.length], 'int64');
      this.constants.set(key, v);
    }
    return v;
  }

  /** Emits one ONNX node (no gradient); null inputs are ONNX's omitted optional inputs. */
  emit(
    opType: string,
    inputs: readonly (Value | null)[],
    outputs: readonly OutputSpec[],
    attribute: OnnxAttribute[] = [],
  ): Value[] {
    for (const v of inputs)
      if (v && v.graph !== this) throw new Error(`${opType}: input ${v.name} belongs to another graph`);
    const outs = outputs.map(
      (o) =>
        new Value(this, this.next++, this.fresh(opType.toLowerCase()), [...o.shape], o.dtype ?? 'float32'),
    );
    this.nodes.push({
      name: this.fresh(`n_${opType}`),
      opType,
      input: inputs.map((v) => (v ? v.name : '')),
      output: outs.map((v) => v.name),
      attribute,
    });
    return outs;
  }

  /** Emits a node with one output. */
  emit1(
    opType: string,
    inputs: readonly (Value | null)[],
    out: OutputSpec,
    attribute: OnnxAttribute[] = [],
  ): Value {
    return this.emit(opType, inputs, [out], attribute)[0];
  }

  record(entry: TapeEntry): Value {
    this.tape.push(entry);
    return entry.output;
  }

  /**
   * Marks a value as a graph output under `name`. The node that computes it writes straight into
   * the output (renamed when encoding); an Identity copy is emitted only for a graph input, a
   * constant, or a value that is output under two names.
   */
  output(name: string, value: Value): void {
    if (value.graph !== this) throw new Error(`output ${name}: value belongs to another graph`);
    this.claim(name, 'output');
    this.outputs.push({ name, value });
  }

  get inputValues(): readonly Value[] {
    return this.inputs;
  }

  get outputValues(): readonly { name: string; value: Value }[] {
    return this.outputs;
  }

  get nodeCount(): number {
    return this.nodes.length;
  }

  /** The ONNX model bytes (IR 8, opset 17). */
  encode(): Uint8Array {
    const produced = new Set(this.nodes.flatMap((n) => n.output));
    const uses = new Map<string, number>();
    for (const { value } of this.outputs) uses.set(value.name, (uses.get(value.name) ?? 0) + 1);
    const rename = new Map<string, string>();
    const copies: OnnxNode[] = [];
    for (const { name, value } of this.outputs) {
      if (produced.has(value.name) && uses.get(value.name) === 1) rename.set(value.name, name);
      else
        copies.push({ name: `n_Identity_${name}`, opType: 'Identity', input: [value.name], output: [name] });
    }
    const r = (n: string): string => rename.get(n) ?? n;
    const nodes = this.nodes.map((n) => ({ ...n, input: n.input.map(r), output: n.output.map(r) }));
    return encodeModel({
      irVersion: IR_VERSION,
      producerName: 'resrt-nn',
      opsetImport: [{ domain: '', version: NN_OPSET }],
      graph: {
        name: this.name,
        node: [...nodes, ...copies],
        initializer: this.initializers,
        input: this.inputs.map((v) => tensorValueInfo(v.name, elemType[v.dtype], v.shape)),
        output: this.outputs.map(({ name, value }) =>
          tensorValueInfo(name, elemType[value.dtype], value.shape),
        ),
      },
    });
  }
}
