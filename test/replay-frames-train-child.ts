// Trains the run of test/replay-frames-train-run.ts (argv: outDir, steps, optional config JSON) until
// it ends or is killed.
import { trainResidual } from '../src/residual/trainer.js';
import { framesRunOptions } from './replay-frames-train-run.js';

const config = process.argv[4] ? (JSON.parse(process.argv[4]) as Record<string, unknown>) : {};
await trainResidual(framesRunOptions(process.argv[2], Number(process.argv[3]), () => {}, config));
