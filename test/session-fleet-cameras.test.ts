// The session fleet with cameras (issue 20, "Must show"), through real dependencies: two virtual
// robots of the camera puck task (test/fixtures/puck-task.ts) publish their top camera's frames
// over MQTT as a robot's camera node does; each actor reads them through its robot config's MQTT
// camera, acts with a visuomotor ONNX base that reads the image and exports an `embedding`, and
// sends either the base's features or the JPEG frames per transition; one learner (embedded broker)
// learns a camera residual on [embedding | state] (JPEG: its own base's features of the frames).
// Versions advance, both actors act with them, every logged transition carries its camera
// payload, and success rises as in the state fleet (session-fleet-run.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { TransitionWal } from '../src/residual/service/wal.js';
import { readFileSync } from 'node:fs';
import { isCameraResidualHeader } from '../src/runtime/camera-residual.js';
import { decodeModelHeader } from '../src/util/onnx-proto.js';
import { runFleetOf } from './session-fleet-run.js';
import { puckCamTask } from './fixtures/puck-task.js';
import { PUCK_CAM_EMBEDDING, writeBiasedPuckCamBase } from './session-fixtures.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe('session over MQTT with cameras', () => {
  it('two camera robots (features and JPEG actors) and one learner: residual versions advance, both actors use them, success rises', async () => {
    const fleet = await runFleetOf(
      {
        session: 'camfleet',
        task: puckCamTask,
        writeBase: writeBiasedPuckCamBase,
        actors: [
          { robotId: 'cam-feat', sendFrames: 'features' },
          { robotId: 'cam-jpeg', sendFrames: 'jpeg' },
        ],
        // The state fleet's marks. Measured (2026-12-06, 2-core machine at load 4-12 from other
        // work, 109-144 s each): base 0.32 → newest residual 0.86, 0.83, 0.88 noise-free, last
        // 50 residual-acted episodes 0.96, 0.82, 0.96 (all three runs passed). The camera
        // residual reads 8 more inputs than the state one and got 6000 updates: at 4000 (and the
        // default 200 ms frame age limit) one fleet ended at 0.52 noise-free, last 50 at 0.44.
        recentRise: 0.25,
        noiseFreeRise: 0.1,
        updates: 6000,
      },
      undefined,
      cleanups,
    );
    // The learner trained on camera data from both robots: its residual reads the base's
    // embedding, and every transition each robot logged carries its mode's payload.
    expect(fleet.final.camera).toMatchObject({ featureDim: PUCK_CAM_EMBEDDING, failedEpisodes: 0 });
    const residualPath = join(fleet.learnerDir, 'residual.onnx');
    expect(isCameraResidualHeader(decodeModelHeader(readFileSync(residualPath), residualPath))).toBe(true);
    const payloads = new Map<string, Map<string, number>>();
    const wal = TransitionWal.open(join(fleet.learnerDir, 'wal'), {
      transitions: (b) => {
        const counts = payloads.get(b.robotId) ?? new Map<string, number>();
        payloads.set(b.robotId, counts);
        for (const t of b.transitions) {
          const kind = t.camera?.obs.kind ?? 'missing';
          counts.set(kind, (counts.get(kind) ?? 0) + 1);
        }
      },
      episode: () => {},
    });
    await wal.close();
    console.log(
      `fleet camfleet: logged camera payloads ${JSON.stringify([...payloads].map(([r, c]) => [r, Object.fromEntries(c)]))}`,
    );
    expect([...(payloads.get('cam-feat')?.keys() ?? [])]).toEqual(['features']);
    expect([...(payloads.get('cam-jpeg')?.keys() ?? [])]).toEqual(['jpeg']);
    expect(fleet.final.camera!.missingSteps).toBe(0);
  }, 300_000);
});
