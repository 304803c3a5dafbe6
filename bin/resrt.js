#!/usr/bin/env node
// Runs the compiled CLI; `npm install` (prepare) builds dist/.
import { main } from '../dist/cli.js';

main(process.argv).catch((err) => {
  process.stderr.write(`resrt: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
