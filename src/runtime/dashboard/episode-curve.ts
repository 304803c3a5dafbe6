/**
 * What a dashboard charts of a session's episodes, kept by whoever sees them end (the learner for
 * all robots, each actor for its own): the success rate over the last `window` episodes against
 * episodes and env steps, and every episode's return.
 */
export interface SuccessPoint {
  /** Episodes ended so far (this one included). */
  episodes: number;
  /** Env steps of those episodes. */
  envSteps: number;
  /** Success over the last `window` episodes. */
  successRate: number;
}

export interface ReturnPoint {
  /** Episodes ended so far (this one included). */
  episodes: number;
  ret: number;
  success: boolean;
  robotId?: string;
}

/** An evaluation of a fixed policy, drawn as a point with its 95% interval. */
export interface EvaluationPoint {
  episodes: number;
  envSteps: number;
  successRate: number;
  ciLow: number;
  ciHigh: number;
  label: string;
}

export interface CurveSnapshot {
  curve: SuccessPoint[];
  returns: ReturnPoint[];
  evaluations: EvaluationPoint[];
}

export class EpisodeCurve {
  private readonly recent: boolean[] = [];
  private readonly points: SuccessPoint[] = [];
  private readonly returns: ReturnPoint[] = [];
  private readonly evaluations: EvaluationPoint[] = [];
  private total = 0;
  private steps = 0;

  constructor(
    readonly window = 20,
    /** Points kept for the charts (the oldest go first). */
    readonly keep = 1000,
  ) {}

  add(e: { success: boolean; steps: number; ret: number; robotId?: string }): void {
    this.total++;
    this.steps += e.steps;
    this.recent.push(e.success);
    if (this.recent.length > this.window) this.recent.shift();
    push(
      this.points,
      { episodes: this.total, envSteps: this.steps, successRate: this.recentRate()! },
      this.keep,
    );
    push(
      this.returns,
      { episodes: this.total, ret: e.ret, success: e.success, ...(e.robotId ? { robotId: e.robotId } : {}) },
      this.keep,
    );
  }

  /** An evaluation measured now (after the episodes so far). */
  addEvaluation(e: { successRate: number; ciLow: number; ciHigh: number; label: string }): void {
    push(this.evaluations, { episodes: this.total, envSteps: this.steps, ...e }, this.keep);
  }

  /** Success over the last `window` episodes; null before the first. */
  recentRate(): number | null {
    return this.recent.length ? this.recent.filter(Boolean).length / this.recent.length : null;
  }

  get episodes(): number {
    return this.total;
  }

  snapshot(): CurveSnapshot {
    return { curve: this.points, returns: this.returns, evaluations: this.evaluations };
  }
}

function push<T>(list: T[], item: T, keep: number): void {
  list.push(item);
  if (list.length > keep) list.splice(0, list.length - keep);
}
