#!/usr/bin/env node
// Makes sure the system packages the tests need (scripts/system-packages.txt) are installed, before
// `npm test` runs them and in CI. Plain Node with no dependencies: it runs before anything is built.
//
//   node scripts/system-packages.mjs            install what is missing when root with apt-get;
//                                               otherwise stop (exit 1) with the exact command to run
//   node scripts/system-packages.mjs --check    never install: list what is missing, exit 1 if any
//   node scripts/system-packages.mjs --list     print the package names on one line (for scripts)
//
// With --need-node-modules it also stops when `npm install` has not been run (what `npm test` needs).
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const listPath = join(root, 'scripts', 'system-packages.txt');

/** @returns {{ pkg: string, command: string, why: string }[]} */
function readPackageList(path = listPath) {
  return readFileSync(path, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [pkg, command, ...why] = line.split(/\s+/);
      if (!pkg || !command) throw new Error(`${path}: "${line}" needs a package name and a command`);
      return { pkg, command, why: why.join(' ') };
    });
}

// Debian keeps daemons such as mosquitto in sbin, which a non-root PATH often lacks.
const searchDirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/local/sbin'];

function onPath(command) {
  return searchDirs.some((dir) => {
    if (!dir) return false;
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function missingPackages() {
  return readPackageList().filter((p) => !onPath(p.command));
}

function installCommand(pkgs) {
  const apt = `apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
  if (!onPath('apt-get')) return null;
  if (process.getuid?.() === 0) return `apt-get update && ${apt}`;
  return onPath('sudo') ? `sudo apt-get update && sudo ${apt}` : `su -c 'apt-get update && ${apt}'`;
}

function describe(missing) {
  return missing.map((p) => `  ${p.pkg.padEnd(10)} ${p.why}`).join('\n');
}

function stop(missing, why) {
  const pkgs = missing.map((p) => p.pkg);
  const command = installCommand(pkgs);
  process.stderr.write(`\nThe tests need these system packages, which are not installed:\n${describe(missing)}\n`);
  if (why) process.stderr.write(`${why}\n`);
  process.stderr.write(
    command
      ? `Install them, then run the tests again:\n  ${command}\n\n`
      : `Install them with your system's package manager (Debian names: ${pkgs.join(' ')}), then run the tests again.\n\n`,
  );
  process.exit(1);
}

function run(argv) {
  if (argv[0] === '--list') {
    console.log(readPackageList().map((p) => p.pkg).join(' '));
    return;
  }
  if (argv.includes('--need-node-modules') && !existsSync(join(root, 'node_modules', 'vitest', 'package.json'))) {
    process.stderr.write('\nThe npm dependencies are not installed: run `npm install` first, then `npm test`.\n\n');
    process.exit(1);
  }
  const missing = missingPackages();
  if (missing.length === 0) return;
  if (argv.includes('--check')) stop(missing);
  if (process.getuid?.() !== 0 || !onPath('apt-get')) stop(missing);
  const pkgs = missing.map((p) => p.pkg);
  console.log(`Installing the system packages the tests need: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...pkgs]]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env });
    if (r.status !== 0) stop(missing, `apt-get ${args[0]} failed (exit ${r.status ?? r.signal}).`);
  }
  const still = missingPackages();
  if (still.length) stop(still, 'apt-get installed them, but these commands are still not found.');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) run(process.argv.slice(2));
