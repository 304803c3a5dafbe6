/**
 * Starts a worker thread on one of our modules, compiled or not. Compiled (dist/*.js) it is a
 * plain module worker; from .ts sources (tsx, vitest) the worker first registers tsx's ESM hooks
 * through its API and then imports the .ts entry: hooks registered by the parent's --import do not
 * reach worker threads on Node 20.
 */
import './ort-telemetry.js';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** `entry` is the module's URL as the caller sees it: new URL('./x.js', import.meta.url). */
export function startModuleWorker(entry: URL, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}

/** The URL of a sibling module with the caller's own extension (.ts under tsx, .js compiled). */
export function siblingModule(callerUrl: string, baseName: string): URL {
  const ext = callerUrl.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${baseName}${ext}`, callerUrl);
}
