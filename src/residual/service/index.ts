/** Real-world sessions, learner side: what `resrt learner` calls (see docs/sessions.md). */
export { runLearnerService, type LearnerService, type LearnerSnapshot } from './learner-service.js';
export type { LearnerServiceOptions } from './service-options.js';
export { TransitionWal, type EpisodeRecord } from './wal.js';
export { Sequencer, EpisodeAssembler, episodeRewards, interventionDemos, type RewardMode } from './ingest.js';
