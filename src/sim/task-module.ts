/**
 * Imports a user's task module by path, the way docs/tasks.md promises: a folder holding only
 * task.ts and model.xml loads, with `import { defineTask } from 'resrt/task'` resolving to this
 * resrt, and a failure says which of the usual causes it was.
 *
 * Two things plain Node would get wrong here. A .ts file with no package.json above it that says
 * "type" is CommonJS to Node, so `export default` would arrive nested (default.default); task
 * sources are ES modules, so such files are loaded as ES modules. And 'resrt/task' resolves only
 * inside a project that depends on resrt; a task run by this resrt gets this resrt's module. Both
 * are module-resolution hooks (node:module register), registered once per process and task folder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { register } from 'node:module';
import { dirname, extname, join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ResrtError } from '../util/errors.js';

// Runs in Node's hooks thread; it gets its settings through `initialize`. Kept to what it must do.
const hooks = `
let specifiers = {};
let esmRoot = null;
export async function initialize(data) {
  specifiers = data.specifiers;
  esmRoot = data.esmRoot;
}
export async function resolve(specifier, context, next) {
  if (Object.hasOwn(specifiers, specifier)) return { url: specifiers[specifier], shortCircuit: true };
  const resolved = await next(specifier, context);
  if (esmRoot && resolved.url.startsWith(esmRoot) && !resolved.url.includes('/node_modules/') &&
      /\\.(ts|tsx)$/.test(new URL(resolved.url).pathname)) {
    return { ...resolved, format: 'module' };
  }
  return resolved;
}
`;

/** The package's public entry points a task may import, and the modules they are in this build. */
function ownSpecifiers(): Record<string, string> {
  // This file is src/sim/task-module.ts (tsx) or dist/sim/task-module.js: task.* sits beside it.
  const here = new URL(import.meta.url);
  const task = new URL(`./task${extname(here.pathname)}`, here).href;
  // 'resrt/dist/sim/task.js' is the path the docs gave before 'resrt/task' existed.
  return { 'resrt/task': task, 'resrt/dist/sim/task.js': task };
}

const hooked = new Set<string>();

/** Registers the hooks for modules under `dir` (once per folder). */
function hookFolder(dir: string): void {
  const esmRoot = typeScriptIsEsmUnder(dir) ? pathToFileURL(dir + sep).href : null;
  const key = esmRoot ?? '';
  if (hooked.has(key)) return;
  hooked.add(key);
  register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
    data: { specifiers: ownSpecifiers(), esmRoot },
  });
}

/** True unless the nearest package.json above `dir` says how .ts files load ("type"). */
function typeScriptIsEsmUnder(dir: string): boolean {
  for (let d = dir; ; d = dirname(d)) {
    const pkg = join(d, 'package.json');
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: unknown }).type === undefined;
      } catch {
        return true;
      }
    }
    if (dirname(d) === d) return true;
  }
}

/** The module's namespace, or a ResrtError that names why it could not be loaded. */
export async function importTaskModule(path: string): Promise<Record<string, unknown>> {
  hookFolder(dirname(path));
  const url = pathToFileURL(path).href;
  let mod: Record<string, unknown>;
  try {
    if (/\.(m?ts|cts|tsx)$/.test(path)) {
      // TypeScript task modules are compiled on the fly, so users need no build step.
      const { tsImport } = await import('tsx/esm/api');
      mod = (await tsImport(url, import.meta.url)) as Record<string, unknown>;
    } else {
      mod = (await import(url)) as Record<string, unknown>;
    }
  } catch (err) {
    throw loadError(path, err);
  }
  return mod;
}

function loadError(path: string, err: unknown): ResrtError {
  if (err instanceof ResrtError) return err;
  const e = err as { name?: string; code?: string; message?: string };
  const message = String(e?.message ?? err);
  if (e?.name === 'TransformError') {
    // esbuild: "Transform failed with 1 error:\n/path/task.ts:2:57: ERROR: Expected ..."
    const detail = message.split('\n').slice(1).join('\n').trim() || message;
    return new ResrtError(
      `task module ${path} does not compile: ${detail}`,
      'fix the TypeScript syntax at the line and column named (the rest of the file was not checked)',
    );
  }
  if (/Cannot use import statement outside a module|Unexpected token 'export'/.test(message)) {
    return new ResrtError(
      `task module ${path} uses import/export but Node loads it as CommonJS`,
      'rename it task.mjs (or task.ts), or add {"type": "module"} to the package.json beside it',
    );
  }
  if (
    e?.code === 'ERR_MODULE_NOT_FOUND' ||
    e?.code === 'MODULE_NOT_FOUND' ||
    /Cannot find (package|module)/.test(message)
  ) {
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec(message)?.[1] ?? 'a module';
    return new ResrtError(
      `task module ${path} imports '${missing}', which cannot be found: ${message.split('\n')[0]}`,
      missingImportFix(missing),
    );
  }
  return new ResrtError(
    `task module ${path} failed while loading: ${message.split('\n')[0]}`,
    `fix the error in the module; \`npx tsx ${path}\` runs it alone and shows the full trace`,
  );
}

function missingImportFix(specifier: string): string {
  if (specifier === 'resrt/task')
    // Only ES module imports pass the resolve hook; require() of a CommonJS-typed module does not.
    return 'the module is loaded as CommonJS (a package.json above it says "type": "commonjs"), and only ES modules get the running resrt\'s \'resrt/task\': rename it .mts, set "type": "module", or `npm install resrt` in that project';
  if (specifier === 'resrt' || specifier.startsWith('resrt/'))
    return "import defineTask from 'resrt/task', the package's public path for tasks";
  if (specifier.startsWith('.') || specifier.startsWith('/'))
    return 'check the path of the import (it resolves from the task module)';
  const name = specifier.startsWith('@')
    ? specifier.split('/').slice(0, 2).join('/')
    : specifier.split('/')[0];
  return `install it where the task is (npm install ${name}), or remove the import`;
}

/**
 * The task a module exports: its default export (or `task`). A default export whose own `default`
 * is the task (a CommonJS build of `export default`) is named as such, not as missing fields.
 */
export function exportedTask(mod: Record<string, unknown>, path: string): Record<string, unknown> {
  const candidate = mod.default ?? mod.task;
  if (!candidate || typeof candidate !== 'object') {
    throw new ResrtError(
      `task module ${path} exports no task`,
      'export the task as default: `export default defineTask({...})`',
    );
  }
  const inner = (candidate as { default?: unknown }).default;
  if (inner && typeof inner === 'object' && !('name' in candidate) && 'name' in inner) {
    throw new ResrtError(
      `task module ${path}: the task is nested one level down (default.default): the module was built or loaded as CommonJS, whose \`exports.default\` arrives as a property of the default export`,
      'load it as an ES module: rename it .mts (or .mjs), or set "type": "module" in the package.json above it',
    );
  }
  return candidate as Record<string, unknown>;
}
