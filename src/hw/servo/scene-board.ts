/**
 * The scene board: a device on the servo bus that reports values about the scene (object and
 * target poses, the episode's outcome and counters) as float32 registers. The virtual servo bus
 * puts one beside the emulated arm, so a state-based policy sees the cube as the simulator does;
 * on a real arm, cameras take its place.
 *
 *   model number (at the protocol's model-number address) = SCENE_BOARD_MODEL
 *   address 127: number of values N;  addresses 128..128+4N: the values, float32 little-endian
 */
import { ResrtError } from '../../util/errors.js';
import type { ServoBus } from './bus.js';

export const SCENE_BOARD_MODEL = 0x5ce0;
export const SCENE_COUNT_ADDRESS = 127;
export const SCENE_VALUES_ADDRESS = 128;
export const SCENE_MAX_VALUES = 31;

export async function readSceneBoard(bus: ServoBus, id: number, values: number): Promise<Float32Array> {
  const status = await bus.read(id, SCENE_COUNT_ADDRESS, 1 + 4 * values);
  const p = status.params;
  if (p[0] !== values) {
    throw new ResrtError(
      `the scene board at id ${id} reports ${p[0]} values, the robot config expects ${values}`,
      `set servo.scene.values to ${p[0]} (or use the robot config the virtual bus wrote)`,
    );
  }
  const view = new DataView(p.buffer, p.byteOffset + 1, 4 * values);
  const out = new Float32Array(values);
  for (let i = 0; i < values; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}
