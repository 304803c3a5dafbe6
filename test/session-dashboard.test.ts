// The dashboards in headless Chromium (playwright-core) against a live session: a learner with its
// embedded broker and one actor on a virtual robot. The learner page shows live numbers and its
// success button reaches the learner through the actor; on the actor page, keyboard teleop
// intervenes and the e-stop button stops the actor on its next tick.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { BrowserContext, Page } from 'playwright-core';
import { launchChromium, type HeadlessChromium } from './fixtures/chromium.js';
import { runLearnerService, type LearnerService } from '../src/residual/service/learner-service.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import { actorRobot } from '../src/hw/actor-robot.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { builtInTasks } from '../src/sim/registry.js';
import { smallLearner, waitFor, writeWeakReachBase } from './session-fixtures.js';

let dir: string;
let chrome: HeadlessChromium | undefined;
let browser: BrowserContext;
let learner: LearnerService;
let actor: ActorHandle;
let robot: VirtualRobot;
const commands: { at: number }[] = [];
const applied: { at: number }[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-dash-'));
  const basePath = join(dir, 'base.onnx');
  writeWeakReachBase(basePath);
  learner = await runLearnerService({
    outDir: join(dir, 'learner'),
    brokerPort: 0,
    base: basePath,
    profile: 'cpu',
    config: smallLearner,
    dashboardPort: 0,
  });
  robot = await startVirtualRobot(builtInTasks.reach, {
    transport: { brokerUrl: learner.brokerUrl, robotId: 'arm' },
  });
  const original = robot.plant.command.bind(robot.plant);
  robot.plant.command = (a: Float32Array) => {
    applied.push({ at: performance.now() });
    original(a);
  };
  actor = await runActor({
    robotId: 'arm',
    brokerUrl: learner.brokerUrl,
    stateDir: join(dir, 'arm'),
    base: basePath,
    robot: actorRobot({
      url: robot.robotUrl,
      config: robot.config,
      virtualScene: { obsDim: robot.plant.obsDim },
    }),
    labelTimeoutMs: 1500,
    dashboardPort: 0,
    onCommand: () => commands.push({ at: performance.now() }),
  });
  chrome = await launchChromium();
  browser = chrome.browser;
}, 90_000);

afterAll(async () => {
  await chrome?.close();
  await actor?.stop();
  await robot?.close();
  await learner?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const numberIn = async (page: Page, testId: string): Promise<number> =>
  Number(await page.locator(`[data-testid="${testId}"]`).innerText());

/** The page's charts: axes with ticks and titles (units), and this session's episodes drawn. */
async function checkCharts(page: Page): Promise<void> {
  const chart = (id: string) => page.locator(`[data-testid="chart-${id}"]`);
  await expect.poll(() => chart('episodes').locator('polyline').count(), { timeout: 30_000 }).toBe(1);
  const texts = async (id: string, axis: string, cls: string): Promise<string[]> =>
    chart(id).locator(`text.${cls}[data-axis="${axis}"]`).allTextContents();
  for (const [id, x] of [
    ['episodes', 'episodes'],
    ['steps', 'env steps'],
  ]) {
    expect(await texts(id, 'x', 'title')).toEqual([x]);
    expect(await texts(id, 'y', 'title')).toEqual(['success rate (%)']);
    expect(await texts(id, 'y', 'tick')).toEqual(['0%', '20%', '40%', '60%', '80%', '100%']);
    const xTicks = (await texts(id, 'x', 'tick')).map((t) => Number(t.replace('k', '000')));
    expect(xTicks[0]).toBe(0);
    expect(xTicks.length).toBeGreaterThanOrEqual(3);
    expect(xTicks.every((v, i) => i === 0 || v > xTicks[i - 1])).toBe(true);
  }
  // The steps chart reaches past the episodes chart: an episode is many env steps.
  const last = async (id: string): Promise<number> =>
    Number((await texts(id, 'x', 'tick')).at(-1)!.replace('k', '000'));
  expect(await last('steps')).toBeGreaterThan(await last('episodes'));
  expect(await chart('returns').locator('circle[data-series="dot"]').count()).toBeGreaterThan(0);
  expect(await texts('returns', 'y', 'title')).toEqual(['return (sum of rewards)']);
}

describe('dashboard', () => {
  it('the learner page shows live numbers; its success label reaches the learner; its teleop becomes demonstrations', async () => {
    const page = await browser.newPage();
    await page.goto(learner.dashboardUrl!);
    await page.locator('[data-testid="learner-transitions"]').waitFor();
    await expect.poll(() => numberIn(page, 'learner-transitions'), { timeout: 20_000 }).toBeGreaterThan(0);
    const first = await numberIn(page, 'learner-transitions');
    await expect
      .poll(() => numberIn(page, 'learner-transitions'), { timeout: 20_000 })
      .toBeGreaterThan(first);
    await page.locator('[data-testid="phase-arm"]').waitFor();
    // A person's verdict: clicked while the episode runs (or waits for its label).
    for (let attempt = 0; attempt < 6 && learner.snapshot().labels === 0; attempt++) {
      await expect
        .poll(() => page.locator('[data-testid="phase-arm"]').innerText(), { timeout: 15_000 })
        .toMatch(/run|label/);
      await page.locator('[data-testid="success-arm"]').click();
      await waitFor('the label to reach the learner', () => learner.snapshot().labels > 0, 4000).catch(
        () => {},
      );
    }
    await checkCharts(page);
    const snap = learner.snapshot();
    expect(snap.labels).toBeGreaterThanOrEqual(1);
    expect(snap.labelledSuccesses).toBeGreaterThanOrEqual(1);
    expect(learner.episodes().some((e) => e.labelled && e.success && e.robotId === 'arm')).toBe(true);
    await expect
      .poll(() => page.locator('[data-testid="learner-labels"]').innerText(), { timeout: 5000 })
      .toMatch(/labelled successes: [1-9]/);
    // A storage line per side (docs/sessions.md, "Disk limits and compaction").
    await expect
      .poll(() => page.locator('[data-testid="storage-learner"]').innerText(), { timeout: 5000 })
      .toMatch(
        /^write-ahead log \(\d+ of \d+ segments compacted\): [\d.]+ of 65536\.0 MiB, [\d.]+ MiB free$/,
      );
    expect(await page.locator('[data-testid="storage-arm"]').innerText()).toMatch(
      /^arm spool \(unacknowledged\): [\d.]+ of 1024\.0 MiB, [\d.]+ MiB free$/,
    );
    // Keyboard teleop from the learner's page travels over MQTT; the steps become demonstrations.
    const before = actor.status().interventionSteps;
    await page.locator('[data-testid="intervene"]').check();
    await page.selectOption('[data-testid="teleop-robot"]', 'arm');
    await page.keyboard.down('w');
    await waitFor(
      'interventions through the learner',
      () => actor.status().interventionSteps > before + 5,
      20_000,
    );
    await page.keyboard.up('w');
    await page.locator('[data-testid="intervene"]').uncheck();
    await waitFor(
      'intervention steps in the demo replay',
      () => learner.snapshot().demoTransitions > 0,
      20_000,
    );
    await page.close();
  }, 90_000);

  it('on the actor page, keyboard teleop intervenes, pause holds and resume goes on, and the e-stop button stops the actor on its next tick', async () => {
    const page = await browser.newPage();
    await page.goto(actor.dashboardUrl!);
    await page.locator('[data-testid="phase-arm"]').waitFor();
    const before = actor.status().interventionSteps;
    await page.locator('[data-testid="intervene"]').check();
    await page.keyboard.down('d');
    await waitFor('intervention steps', () => actor.status().interventionSteps > before + 5, 15_000);
    await page.keyboard.up('d');
    await page.locator('[data-testid="intervene"]').uncheck();
    // The actor page charts its own robot's episodes (it used to show empty charts).
    await checkCharts(page);

    // Pause holds the robot (no commands at all), resume carries on.
    await page.locator('[data-testid="pause-arm"]').click();
    await waitFor('the actor to pause', () => actor.status().phase === 'paused', 5000, 10);
    await new Promise((r) => setTimeout(r, 100));
    const pausedAt = performance.now();
    await new Promise((r) => setTimeout(r, 600));
    expect(commands.filter((c) => c.at > pausedAt)).toEqual([]);
    const beforeResume = commands.length;
    await page.locator('[data-testid="resume-arm"]').click();
    await waitFor('commands after resume', () => commands.length > beforeResume + 10, 10_000);

    await expect
      .poll(() => page.locator('[data-testid="phase-arm"]').innerText(), { timeout: 15_000 })
      .toBe('run');
    const response = page.waitForResponse((r) => r.url().includes('/api/control'));
    await page.locator('[data-testid="estop-arm"]').click();
    expect((await response).status()).toBe(200);
    const stoppedAt = performance.now();
    await waitFor('the actor to report the e-stop', () => actor.status().phase === 'estopped', 2000, 5);
    await new Promise((r) => setTimeout(r, 500));
    // At most the tick already past its safety check, then the one safe command; nothing after.
    const later = commands.filter((c) => c.at > stoppedAt);
    expect(later.length).toBeLessThanOrEqual(2);
    // The device latched too: it applies nothing once the e-stop reached it.
    expect(applied.filter((c) => c.at > stoppedAt + 100)).toEqual([]);
    await expect
      .poll(() => page.locator('[data-testid="phase-arm"]').innerText(), { timeout: 5000 })
      .toBe('estopped');
    await page.close();
  }, 90_000);
});
