// A child process for test/replay-frames.test.ts: resumes outDir's checkpoint (if any), then adds
// episodes with camera frames to a replay and checkpoints it, again and again, until killed. It
// prints WRITING before and WROTE after each checkpoint so the test can kill it mid-write. Frame
// serial = logical frame slot, so the test knows which bytes every slot must hold.
import { readCheckpoint, writeCheckpoint } from '../src/residual/checkpoint.js';
import { ReplayBuffer, packSteps } from '../src/residual/replay.js';
import { FramePacker } from '../src/residual/replay-frames.js';
import { untrainedLearnerState } from './fixtures/learner-state.js';
import { A, O, episodeSteps, writerCameras, writerCapacity } from './replay-frames-fixtures.js';

const outDir = process.argv[2];
const buf = new ReplayBuffer(writerCapacity, O, A, writerCameras);
const saved = readCheckpoint(outDir);
if (saved) {
  buf.restoreFrom(saved.online);
  buf.markEpisodeBoundary();
}
for (;;) {
  const { steps } = episodeSteps([37, 37, 37, 37, 37, 37, 37, 37], writerCameras, buf.frames!.framesAdded);
  buf.addBatch(packSteps(steps, O, A, new FramePacker(writerCameras)));
  process.stdout.write('WRITING\n');
  writeCheckpoint(outDir, {
    learner: untrainedLearnerState(),
    online: buf,
    demos: null,
    trainer: { added: buf.added },
    meta: {},
  });
  process.stdout.write(`WROTE ${buf.added}\n`);
}
