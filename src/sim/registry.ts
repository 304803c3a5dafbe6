/**
 * Finds a task by built-in name or loads a user task from a path (a module file or a directory with
 * task.ts / task.js). Built-in tasks are plain TaskDefinitions, the same contract users implement.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { nearestName } from '../util/config-check.js';
import { ResrtError } from '../util/errors.js';
import type { TaskDefinition } from './task.js';
import { exportedTask, importTaskModule } from './task-module.js';
import { pegInsertTask } from './tasks/peg-insert.js';
import { pushCamTask } from './tasks/push-cam.js';
import { pushTask } from './tasks/push.js';
import { reachTask } from './tasks/reach.js';
import { so101PickPlaceTask } from './tasks/so101/task.js';

export type AnyTask = TaskDefinition<unknown>;

export const builtInTasks: Record<string, AnyTask> = {
  reach: reachTask as AnyTask,
  push: pushTask as AnyTask,
  'peg-insert': pegInsertTask as AnyTask,
  'push-cam': pushCamTask as AnyTask,
  'so101-pick-place': so101PickPlaceTask as AnyTask,
};

export function builtInTaskNames(): string[] {
  return Object.keys(builtInTasks);
}

/** A built-in name, a task module file (.ts, .js, .mjs), or a directory holding task.ts / task.js. */
export async function loadTask(nameOrPath: string): Promise<AnyTask> {
  const builtIn = builtInTasks[nameOrPath];
  if (builtIn) return builtIn;
  const looksLikePath = nameOrPath.includes('/') || nameOrPath.includes('\\') || extname(nameOrPath) !== '';
  if (!looksLikePath || !existsSync(nameOrPath)) {
    throw new ResrtError(
      `unknown task "${nameOrPath}"`,
      looksLikePath
        ? `no file or directory at ${resolve(nameOrPath)}; give a task module (.ts/.js) or a directory with task.ts`
        : `${didYouMean(nameOrPath)}use a built-in task (${builtInTaskNames().join(', ')}) or a path such as ./my-task/ (see docs/tasks.md)`,
    );
  }
  const modulePath = resolveModulePath(resolve(nameOrPath));
  const task = validateTask(exportedTask(await importTaskModule(modulePath), modulePath), modulePath);
  if (typeof task.mjcf !== 'string') {
    const xmlPath = resolve(dirname(modulePath), task.mjcf.path);
    if (!existsSync(xmlPath)) {
      throw new ResrtError(
        `task ${task.name} names MJCF file ${xmlPath}, which does not exist`,
        'give mjcf: { path } relative to the task module',
      );
    }
    return { ...task, mjcf: readFileSync(xmlPath, 'utf8') };
  }
  return task;
}

function didYouMean(name: string): string {
  const near = nearestName(name, builtInTaskNames());
  return near ? `did you mean ${near}? ` : '';
}

function resolveModulePath(path: string): string {
  if (!statSync(path).isDirectory()) return path;
  for (const name of ['task.ts', 'task.mts', 'task.js', 'task.mjs', 'index.ts', 'index.js']) {
    const candidate = join(path, name);
    if (existsSync(candidate)) return candidate;
  }
  throw new ResrtError(
    `task directory ${path} has no task module`,
    'add task.ts (or task.js) exporting the task as default',
  );
}

const required: Record<string, string> = {
  name: 'string',
  mjcf: 'string or { path }',
  controlSubsteps: 'positive integer',
  maxEpisodeSteps: 'positive integer',
  observationNames: 'array of strings',
  reset: 'function',
  observe: 'function',
  success: 'function',
};

function validateTask(candidate: Record<string, unknown>, path: string): AnyTask {
  const problems: string[] = [];
  for (const [field, kind] of Object.entries(required)) {
    const v = candidate[field];
    const ok =
      kind === 'function'
        ? typeof v === 'function'
        : kind === 'string'
          ? typeof v === 'string' && v.length > 0
          : kind === 'positive integer'
            ? Number.isInteger(v) && (v as number) > 0
            : kind === 'array of strings'
              ? Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string')
              : typeof v === 'string' ||
                (typeof v === 'object' && v !== null && typeof (v as { path?: unknown }).path === 'string');
    if (!ok) problems.push(`${field} (${kind})`);
  }
  if (problems.length > 0) {
    throw new ResrtError(
      `task module ${path} is missing or has invalid: ${problems.join(', ')}`,
      'see docs/tasks.md for the fields a task defines (name, mjcf, controlSubsteps, maxEpisodeSteps, observationNames, reset, observe, success)',
    );
  }
  const privileged = (candidate as Partial<AnyTask>).privilegedObservation;
  const stray = (privileged?.cameraTargets ?? []).filter((t) => !privileged!.names.includes(t));
  if (stray.length > 0) {
    throw new ResrtError(
      `task module ${path}: privilegedObservation.cameraTargets names ${stray.join(', ')}, which privilegedObservation.names lacks`,
      `name cameraTargets from privilegedObservation.names (${privileged!.names.join(', ')})`,
    );
  }
  return candidate as unknown as AnyTask;
}
