// The bus transaction layer over a real pseudo-terminal against the virtual bus, for both
// protocols: scan, sync read/write, retries with 1 % of status packets dropped, checksum errors,
// two servos on one id, EEPROM guards (Feetech lock, Dynamixel torque), unplug and replug.
import { describe, expect, it } from 'vitest';
import { ServoBus } from '../src/hw/servo/bus.js';
import {
  decodeRegister,
  encodeRegister,
  STS3215,
  XL330_M288,
  type MotorModel,
} from '../src/hw/servo/models.js';
import type { ProtocolName } from '../src/hw/servo/packet.js';
import { readRegister, writeEeprom, writeRegister } from '../src/hw/servo/registers.js';
import { EmulatedServo, IdealJoint } from '../src/hw/servo/virtual/emulated-servo.js';
import { VirtualServoBus } from '../src/hw/servo/virtual/virtual-bus.js';

// Generous waits: the machine these tests run on may be loaded far past its two cores.
const busOptions = { retries: 4, timeoutMarginMs: 150, backoffInitialMs: 20, backoffMaxMs: 200 };
const IDS = [1, 2, 3, 4, 5, 6];

async function withBus(
  protocol: ProtocolName,
  model: MotorModel,
  fn: (ctx: { vbus: VirtualServoBus; bus: ServoBus; servos: EmulatedServo[] }) => Promise<void>,
  extra: { dropRate?: number; corruptRate?: number; duplicate?: number } = {},
): Promise<void> {
  const servos = IDS.map((id) => new EmulatedServo(model, id, new IdealJoint(1000 + 100 * id)));
  if (extra.duplicate !== undefined)
    servos.push(new EmulatedServo(model, extra.duplicate, new IdealJoint(3000)));
  const vbus = await VirtualServoBus.start({
    protocol,
    devices: servos,
    dropRate: extra.dropRate,
    corruptRate: extra.corruptRate,
    seed: 7,
  });
  const bus = await ServoBus.open(vbus.hostPath, { protocol, ...busOptions });
  try {
    await fn({ vbus, bus, servos });
  } finally {
    await bus.close();
    await vbus.close();
  }
}

describe.each([
  ['feetech', STS3215],
  ['dynamixel', XL330_M288],
] as const)('%s bus over a pty', (protocol, model) => {
  const pos = model.registers.presentPosition;
  const goal = model.registers.goalPosition;

  it('scans the ids that answer, with their model numbers', async () => {
    await withBus(protocol, model, async ({ bus }) => {
      const found = await bus.scan([0, ...IDS, 7, 200]);
      expect(found).toEqual(IDS.map((id) => ({ id, modelNumber: model.modelNumber })));
    });
  });

  it('sync-writes six goals and sync-reads six positions back', async () => {
    await withBus(protocol, model, async ({ bus, servos }) => {
      for (const id of IDS) await writeRegister(bus, id, model, 'torqueEnable', 1);
      const goals = IDS.map((id) => 1500 + 37 * id);
      await bus.syncWrite(
        goal.address,
        goal.size,
        IDS.map((id, k) => ({ id, data: encodeRegister(goal, goals[k]) })),
      );
      const r = await bus.syncRead(pos.address, pos.size, IDS);
      expect(r.missing).toEqual([]);
      expect(IDS.map((id) => decodeRegister(pos, r.data.get(id)!.params))).toEqual(goals);
      expect(servos.map((s) => s.get(goal))).toEqual(goals);
    });
  });

  it('retries missing status packets (1 % dropped) and counts every retry', async () => {
    await withBus(
      protocol,
      model,
      async ({ vbus, bus }) => {
        for (let i = 0; i < 200; i++) {
          const r = await bus.syncRead(pos.address, pos.size, IDS);
          expect(r.missing).toEqual([]);
          expect(decodeRegister(pos, r.data.get(3)!.params)).toBe(1300);
        }
        const dropped = vbus.counters().dropped;
        expect(dropped).toBeGreaterThan(0);
        const c = bus.counters();
        // Every drop cost a retry (a loaded machine may add late answers, never fewer retries).
        expect(c.retries).toBeGreaterThanOrEqual(Math.ceil(dropped / IDS.length));
        expect(c.missingStatus).toBeGreaterThanOrEqual(dropped);
        expect(c.failures).toBe(0);
      },
      { dropRate: 0.01 },
    );
  });

  it('detects corrupt status packets by checksum/CRC and never returns their data', async () => {
    await withBus(
      protocol,
      model,
      async ({ vbus, bus }) => {
        for (let i = 0; i < 50; i++) {
          const r = await bus.syncRead(pos.address, pos.size, IDS);
          expect(r.missing).toEqual([]);
          for (const [id, p] of r.data) expect(decodeRegister(pos, p.params)).toBe(1000 + 100 * id);
        }
        expect(vbus.counters().corrupted).toBeGreaterThan(0);
        // A flipped byte fails the checksum/CRC, or (in a length or id field) makes the packet malformed.
        const c = bus.counters();
        expect(c.checksumErrors).toBeGreaterThan(0);
        expect(c.checksumErrors + c.malformed + c.missingStatus).toBeGreaterThanOrEqual(
          vbus.counters().corrupted,
        );
        expect(c.retries).toBeGreaterThan(0);
      },
      { corruptRate: 0.03 },
    );
  });

  it('sees two servos on one id as corrupt answers on every try', async () => {
    await withBus(
      protocol,
      model,
      async ({ vbus, bus }) => {
        expect(await bus.ping(4)).toBeNull();
        expect(vbus.counters().collisions).toBeGreaterThan(0);
        expect(bus.counters().checksumErrors + bus.counters().malformed).toBeGreaterThan(0);
        expect(await bus.ping(5)).toMatchObject({ modelNumber: model.modelNumber });
      },
      { duplicate: 4 },
    );
  });

  it('writes EEPROM past its guard so it survives a power cycle', async () => {
    await withBus(protocol, model, async ({ bus, servos }) => {
      await writeRegister(bus, 2, model, 'torqueEnable', 1);
      if (protocol === 'dynamixel') {
        // Torque on: the servo answers "access error" and keeps the old value.
        await expect(writeRegister(bus, 2, model, 'homingOffset', -25)).rejects.toThrow(/torque off/);
      } else {
        // Locked (the default): the write lands in RAM but is not kept.
        await writeRegister(bus, 2, model, 'homingOffset', -25);
        servos[1].powerCycle();
        expect(await readRegister(bus, 2, model, 'homingOffset')).toBe(0);
      }
      await writeEeprom(bus, 2, model, 'homingOffset', -25);
      servos[1].powerCycle();
      expect(await readRegister(bus, 2, model, 'homingOffset')).toBe(-25);
      if (model.lock) expect(await readRegister(bus, 2, model, 'lock')).toBe(1);
    });
  });

  it('loses the link when the adapter is unplugged and comes back when it is plugged in', async () => {
    await withBus(protocol, model, async ({ vbus, bus }) => {
      const down = new Promise<string>((resolve) => bus.onDown(resolve));
      const up = new Promise<void>((resolve) => bus.onUp(resolve));
      await vbus.unplug();
      // A pty whose peer is gone shows it on the next transfer.
      await bus.syncRead(pos.address, pos.size, IDS).catch(() => undefined);
      expect(await down).toMatch(/closed|error/);
      await expect(bus.read(1, pos.address, pos.size)).rejects.toThrow(/disconnected/);
      await vbus.replug();
      await up;
      const r = await bus.syncRead(pos.address, pos.size, IDS);
      expect(r.missing).toEqual([]);
      expect(bus.counters()).toMatchObject({ linkLosses: 1, reconnects: 1 });
    });
  });
});
