/** Does an imported dataset fit a task? Dimensions must agree; differing names are reported. */
import { ResrtError } from '../../util/errors.js';
import type { DemoHeader } from '../demos.js';

export interface TaskShape {
  name: string;
  obsNames: readonly string[];
  actionNames: readonly string[];
}

/** Throws when the dimensions differ; returns the action names that differ (the dataset's are kept). */
export function checkDatasetFitsTask(h: DemoHeader, task: TaskShape): string[] {
  const problems: string[] = [];
  if (h.obsDim !== task.obsNames.length) {
    problems.push(
      `observations have ${h.obsDim} values, task ${task.name} observes ${task.obsNames.length} (${task.obsNames.join(', ')})`,
    );
  }
  if (h.actionDim !== task.actionNames.length) {
    problems.push(
      `actions have ${h.actionDim} values, task ${task.name} takes ${task.actionNames.length} (${task.actionNames.join(', ')})`,
    );
  }
  if (problems.length > 0) {
    throw new ResrtError(
      `the dataset does not fit task ${task.name}:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      'import it for the task it was recorded on (or without --task), or record demonstrations on this task (resrt collect)',
    );
  }
  return h.actionNames.filter((n, i) => n !== task.actionNames[i] && !/\[\d+\]$/.test(n));
}
