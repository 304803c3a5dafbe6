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
        // The state fleet's marks, on a slower actor and more updates. With the state fleet's
        // actor lr (3e-5) and 6000 updates, four fleets ended noise-free at 0.46, 0.32, 0.95 and
        // 0.70 (last 50: 0.42, 0.74, 0.98, 0.88; two failed, one of them in CI): the camera
        // residual peaks and then swings. Offline on the same fixture and learner (trainResidual,
        // no worker, 6 seeds, 50-episode evaluations every 1k steps) it peaked at 100% by 2-4k
        // steps and fell to 64-88% by 8k; at actor lr 1e-5 each of 4 seeds rose by 4-6k and held 100%
        // from 6k to 12k (2026-12-06). ResFiT trains its actor slower still (1e-6 to 5e-6).
        recentRise: 0.25,
        noiseFreeRise: 0.1,
        updates: 8000,
        actorLr: 1e-5,
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
