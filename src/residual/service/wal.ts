/**
 * The learner's write-ahead log: every transition accepted from an actor and every finished
 * episode, in arrival order, in framed CRC-32 records (src/runtime/session/record-log.ts).
 *
 * fsync policy: a batch of transitions is appended and fsynced before the learner acknowledges it
 * to the actor (which then deletes it from its spool), so an acknowledged transition survives
 * kill -9 and power loss. Episode records are fsynced with the next batch (or at close); one lost
 * in a crash is rebuilt from its transitions on resume.
 */
import { RecordLog, type OpenReport } from '../../runtime/session/record-log.js';
import { decodeBatch, encodeBatch, type TransitionBatch } from '../../runtime/session/codec.js';

const TRANSITIONS = 1;
const EPISODE = 2;

export interface EpisodeRecord {
  robotId: string;
  episode: number;
  /** seq of the episode's last transition. */
  lastSeq: number;
  steps: number;
  ret: number;
  success: boolean;
  /** A person labelled the outcome. */
  labelled: boolean;
  interventions: number;
  safetyEvents: number;
  policyVersion: number;
}

export interface WalVisitor {
  transitions(batch: TransitionBatch): void;
  episode(e: EpisodeRecord): void;
}

export class TransitionWal {
  private constructor(
    private readonly log: RecordLog,
    readonly report: OpenReport,
  ) {}

  /** Opens the log in `dir`, cutting a torn tail, and replays every record into `visit`. */
  static open(dir: string, visit: WalVisitor): TransitionWal {
    const { log, report } = RecordLog.open(dir, { prefix: 'wal', segmentBytes: 32 << 20 }, (r) => {
      if (r.type === TRANSITIONS) visit.transitions(decodeBatch(r.payload));
      else if (r.type === EPISODE)
        visit.episode(JSON.parse(Buffer.from(r.payload).toString('utf8')) as EpisodeRecord);
    });
    return new TransitionWal(log, report);
  }

  /** Appends and fsyncs: on return the batch is durable and may be acknowledged. */
  appendTransitions(batch: TransitionBatch): void {
    this.log.append(TRANSITIONS, encodeBatch(batch));
    this.log.sync();
  }

  appendEpisode(e: EpisodeRecord): void {
    this.log.append(EPISODE, Buffer.from(JSON.stringify(e)));
  }

  sync(): void {
    this.log.sync();
  }

  close(): void {
    this.log.close();
  }
}
