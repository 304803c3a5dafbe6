/** Real-world sessions, learner side: what `resrt learner` calls (see docs/sessions.md). */
export {
  runLearnerService,
  type LearnerServiceOptions,
  type LearnerService,
  type LearnerSnapshot,
} from './learner-service.js';
export { TransitionWal, type EpisodeRecord } from './wal.js';
export { Sequencer, EpisodeAssembler, episodeRewards, interventionDemos, type RewardMode } from './ingest.js';
