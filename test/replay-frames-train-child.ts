// Trains the run of test/replay-frames-train-run.ts (argv: outDir, steps) until it ends or is killed.
import { trainResidual } from '../src/residual/trainer.js';
import { framesRunOptions } from './replay-frames-train-run.js';

await trainResidual(framesRunOptions(process.argv[2], Number(process.argv[3])));
