/** The scene board as a bus device (see ../scene-board.ts for its registers). */
import { SCENE_BOARD_MODEL, SCENE_COUNT_ADDRESS, SCENE_VALUES_ADDRESS } from '../scene-board.js';
import type { ProtocolName } from '../packet.js';
import { DxlError } from './emulated-servo.js';
import type { BusDevice } from './virtual-bus.js';

export class SceneBoardDevice implements BusDevice {
  readonly model: { protocol: ProtocolName; modelNumber: number };
  readonly returnDelayUs = 0;
  readonly answersWrites = true;

  constructor(
    protocol: ProtocolName,
    readonly id: number,
    private readonly values: () => Float32Array,
  ) {
    this.model = { protocol, modelNumber: SCENE_BOARD_MODEL };
  }

  read(address: number, length: number): { error: number; data: Uint8Array } {
    const mem = new Uint8Array(256);
    const modelAt = this.model.protocol === 'feetech' ? 3 : 0;
    mem[modelAt] = SCENE_BOARD_MODEL & 0xff;
    mem[modelAt + 1] = SCENE_BOARD_MODEL >> 8;
    const v = this.values();
    mem[SCENE_COUNT_ADDRESS] = v.length;
    const view = new DataView(mem.buffer);
    for (let i = 0; i < v.length; i++) view.setFloat32(SCENE_VALUES_ADDRESS + 4 * i, v[i], true);
    if (address + length > 256) return { error: 0, data: new Uint8Array(0) };
    return { error: 0, data: mem.slice(address, address + length) };
  }

  write(): number {
    return this.model.protocol === 'dynamixel' ? DxlError.Access : 0;
  }

  statusError(): number {
    return 0;
  }
}
