/**
 * The learner service as a process of its own (tests kill it with SIGKILL; `resrt learner` calls
 * runLearnerService directly). argv[2] is the LearnerServiceOptions as JSON. It prints one line
 * `READY {"brokerUrl": ..., "dashboardUrl": ...}` on stdout once it listens, logs to stderr, and
 * closes cleanly (checkpoint, log flush) on SIGTERM or SIGINT.
 */
import { runLearnerService } from './learner-service.js';
import type { LearnerServiceOptions } from './service-options.js';

const options = JSON.parse(process.argv[2] ?? '{}') as LearnerServiceOptions;
const service = await runLearnerService({ ...options, log: (l) => process.stderr.write(`${l}\n`) });
process.stdout.write(
  `READY ${JSON.stringify({ brokerUrl: service.brokerUrl, dashboardUrl: service.dashboardUrl })}\n`,
);
let closing = false;
const stop = (): void => {
  if (closing) return;
  closing = true;
  void service.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
