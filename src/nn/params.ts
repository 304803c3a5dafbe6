/**
 * A network's parameters as one flat float32 vector with named, shaped views. A training graph
 * takes each state vector (parameters, Adam moments, Polyak targets) as ONE input and returns its
 * update as ONE output, written into the other half of a double buffer; inside the graph `unpack`
 * slices out the tensors and `pack` concatenates their gradients. Measured on onnxruntime-node
 * 1.30: each graph input or output costs ~5–10 µs per run on a loaded 2-core machine, so one
 * tensor per input (~200 inputs and outputs per TD3 update) cost more than the slices and the
 * concatenation (a few tens of µs for 150k parameters).
 */
import type { Value } from './graph.js';
import { concat, reshape, slice } from './ops.js';

export interface ParamSpec {
  name: string;
  shape: readonly number[];
}

export interface ParamEntry extends ParamSpec {
  offset: number;
  size: number;
}

export class ParamLayout {
  readonly entries: readonly ParamEntry[];
  readonly size: number;
  private readonly byName: Map<string, ParamEntry>;

  constructor(specs: readonly ParamSpec[]) {
    let offset = 0;
    this.entries = specs.map((s) => {
      const size = s.shape.reduce((a, b) => a * b, 1);
      const e = { name: s.name, shape: [...s.shape], offset, size };
      offset += size;
      return e;
    });
    this.size = offset;
    this.byName = new Map(this.entries.map((e) => [e.name, e]));
    if (this.byName.size !== this.entries.length) throw new Error('parameter names must be unique');
  }

  entry(name: string): ParamEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`no parameter '${name}' (have ${this.entries.map((x) => x.name).join(', ')})`);
    return e;
  }

  /** The named tensor inside a flat array (a view, not a copy). */
  view(flat: Float32Array, name: string): Float32Array {
    const e = this.entry(name);
    return flat.subarray(e.offset, e.offset + e.size);
  }

  /** Splits a flat graph value [size] into named tensors of their shapes. */
  unpack(flat: Value): Map<string, Value> {
    if (flat.rank !== 1 || flat.shape[0] !== this.size)
      throw new Error(`unpack: ${flat} is not a flat vector of ${this.size} parameters`);
    return new Map(
      this.entries.map((e) => [e.name, reshape(slice(flat, 0, e.offset, e.offset + e.size), e.shape)]),
    );
  }

  /** Concatenates per-parameter values (e.g. gradients) in layout order into one [size] vector. */
  pack(values: ReadonlyMap<string, Value>): Value {
    return concat(
      this.entries.map((e) => {
        const v = values.get(e.name);
        if (!v) throw new Error(`pack: no value for parameter '${e.name}'`);
        return reshape(v, [e.size]);
      }),
      0,
    );
  }
}

/**
 * Two flat buffers: a training step reads `front` and writes its result into `back` (onnxruntime
 * cannot update an input in place), then `swap()` makes the result current without a copy.
 */
export class DoubleBuffer {
  front: Float32Array;
  back: Float32Array;

  constructor(size: number, init?: Float32Array) {
    this.front = init ? Float32Array.from(init) : new Float32Array(size);
    this.back = new Float32Array(size);
    if (this.front.length !== size)
      throw new Error(`DoubleBuffer: ${this.front.length} values for size ${size}`);
  }

  swap(): void {
    [this.front, this.back] = [this.back, this.front];
  }
}
