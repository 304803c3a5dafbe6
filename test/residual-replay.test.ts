import { describe, expect, it } from 'vitest';
import { DualReplay, ReplayBuffer, emptySample, type StepRecord } from '../src/residual/replay.js';
import { Rng } from '../src/util/rng.js';
import { ResrtError } from '../src/util/errors.js';

const O = 2;
const A = 1;

/** Step t of an episode: obs = [ep, t], reward r, nextObs = [ep, t + 1]. */
function step(
  ep: number,
  t: number,
  reward: number,
  flags: { terminated?: boolean; truncated?: boolean; heldBack?: boolean } = {},
): StepRecord {
  return {
    obs: [ep, t],
    baseAction: [0.1 * t],
    action: [0.2 * t],
    reward,
    nextObs: [ep, t + 1],
    nextBaseAction: [0.1 * (t + 1)],
    terminated: flags.terminated ?? false,
    truncated: flags.truncated ?? false,
    heldBack: flags.heldBack ?? false,
  };
}

function nstep(buf: ReplayBuffer, l: number, n: number, gamma: number) {
  const out = emptySample(1, O, A);
  buf.writeNStep(l, n, gamma, out, 0);
  return {
    obs: Array.from(out.obs),
    reward: out.reward[0],
    discount: out.discount[0],
    nextObs: Array.from(out.nextObs),
    nextBase: out.nextBaseAction[0],
    heldBack: out.heldBack[0],
  };
}

describe('n-step replay', () => {
  const g = 0.9;

  it('sums n rewards inside an episode and bootstraps with γ^n', () => {
    const buf = new ReplayBuffer(100, O, A);
    for (let t = 0; t < 6; t++) buf.add(step(0, t, t + 1));
    const s = nstep(buf, 1, 3, g);
    expect(s.obs).toEqual([0, 1]);
    expect(s.reward).toBeCloseTo(2 + g * 3 + g * g * 4, 6);
    expect(s.discount).toBeCloseTo(g ** 3, 6);
    expect(s.nextObs).toEqual([0, 4]);
    expect(s.nextBase).toBeCloseTo(0.4, 6);
  });

  it('stops at termination and does not bootstrap through it', () => {
    const buf = new ReplayBuffer(100, O, A);
    buf.add(step(0, 0, 0));
    buf.add(step(0, 1, 1, { terminated: true }));
    buf.add(step(1, 0, 5));
    buf.add(step(1, 1, 5));
    const s = nstep(buf, 0, 3, g);
    expect(s.reward).toBeCloseTo(0 + g * 1, 6);
    expect(s.discount).toBe(0);
    expect(s.nextObs).toEqual([0, 2]);
  });

  it('stops at truncation but bootstraps through it from the last next observation', () => {
    const buf = new ReplayBuffer(100, O, A);
    buf.add(step(0, 0, 1));
    buf.add(step(0, 1, 0, { truncated: true }));
    buf.add(step(1, 0, 7));
    const s = nstep(buf, 0, 3, g);
    expect(s.reward).toBeCloseTo(1, 6);
    expect(s.discount).toBeCloseTo(g * g, 6);
    expect(s.nextObs).toEqual([0, 2]);
  });

  it('uses a shorter return at the newest step of an episode in progress', () => {
    const buf = new ReplayBuffer(100, O, A);
    for (let t = 0; t < 3; t++) buf.add(step(0, t, 1));
    const s = nstep(buf, 2, 3, g);
    expect(s.reward).toBeCloseTo(1, 6);
    expect(s.discount).toBeCloseTo(g, 6);
    expect(s.nextObs).toEqual([0, 3]);
  });

  it('a one-step return is r + γ·Q(s′) and a terminal one-step return has no bootstrap', () => {
    const buf = new ReplayBuffer(10, O, A);
    buf.add(step(0, 0, 0.5));
    buf.add(step(0, 1, 1, { terminated: true }));
    expect(nstep(buf, 0, 1, g)).toMatchObject({ reward: 0.5, nextObs: [0, 1] });
    expect(nstep(buf, 0, 1, g).discount).toBeCloseTo(g, 6);
    expect(nstep(buf, 1, 1, g).discount).toBe(0);
  });

  it('keeps episode order across the ring wrap-around', () => {
    const buf = new ReplayBuffer(4, O, A);
    for (let t = 0; t < 7; t++) buf.add(step(0, t, t));
    expect(buf.size).toBe(4);
    // Oldest stored is t = 3; its 3-step return runs through t = 3, 4, 5 across the wrap.
    const s = nstep(buf, 3, 3, 1);
    expect(s.obs).toEqual([0, 3]);
    expect(s.reward).toBe(3 + 4 + 5);
    expect(s.nextObs).toEqual([0, 6]);
    const rng = new Rng(1);
    for (let i = 0; i < 50; i++) expect(buf.randomIndex(rng)).toBeGreaterThanOrEqual(3);
  });

  it('markEpisodeBoundary cuts an interrupted episode as a truncation', () => {
    const buf = new ReplayBuffer(10, O, A);
    buf.add(step(0, 0, 1));
    buf.add(step(0, 1, 1));
    buf.markEpisodeBoundary();
    buf.add(step(1, 0, 9));
    const s = nstep(buf, 0, 3, g);
    expect(s.reward).toBeCloseTo(1 + g, 6);
    expect(s.discount).toBeCloseTo(g * g, 6);
    expect(s.nextObs).toEqual([0, 2]);
  });

  it('serializes and restores the buffer exactly, and rejects damaged bytes', () => {
    const buf = new ReplayBuffer(5, O, A);
    for (let t = 0; t < 8; t++) buf.add(step(0, t, t, { truncated: t === 7, heldBack: t % 2 === 0 }));
    const back = ReplayBuffer.deserialize(buf.serialize(), 'test');
    // The held-back flag marks the sampled step itself and survives the round trip.
    expect([3, 4, 5, 6, 7].map((l) => nstep(back, l, 3, g).heldBack)).toEqual([0, 1, 0, 1, 0]);
    expect(back.added).toBe(8);
    expect(back.size).toBe(5);
    for (let l = 3; l < 8; l++) expect(nstep(back, l, 3, g)).toEqual(nstep(buf, l, 3, g));
    const bytes = buf.serialize();
    expect(() => ReplayBuffer.deserialize(bytes.slice(0, bytes.length - 3), 'x.bin')).toThrow(ResrtError);
  });
});

describe('symmetric online/demo sampling', () => {
  it('draws half of every batch from the demos (RLPD 50/50)', () => {
    const online = new ReplayBuffer(1000, O, A);
    const demos = new ReplayBuffer(1000, O, A);
    for (let t = 0; t < 500; t++) online.add(step(1, t, 0));
    for (let t = 0; t < 20; t++) demos.add(step(-1, t, 1));
    const replay = new DualReplay(online, demos, 0.5);
    const rng = new Rng(3);
    const s = replay.sample(256, 1, 0.99, rng);
    let fromDemos = 0;
    for (let i = 0; i < 256; i++) if (s.obs[i * O] === -1) fromDemos++;
    expect(fromDemos).toBe(128);
  });

  it('uses only online data without demos and only demos before any online data', () => {
    const online = new ReplayBuffer(100, O, A);
    const demos = new ReplayBuffer(100, O, A);
    for (let t = 0; t < 10; t++) demos.add(step(-1, t, 1));
    const rng = new Rng(4);
    const onlyDemos = new DualReplay(online, demos, 0.5).sample(32, 1, 0.99, rng);
    for (let i = 0; i < 32; i++) expect(onlyDemos.obs[i * O]).toBe(-1);
    for (let t = 0; t < 10; t++) online.add(step(1, t, 0));
    const noDemos = new DualReplay(online, null, 0.5).sample(32, 1, 0.99, rng);
    for (let i = 0; i < 32; i++) expect(noDemos.obs[i * O]).toBe(1);
    expect(() => new DualReplay(new ReplayBuffer(4, O, A), null, 0.5).sample(4, 1, 0.9, rng)).toThrow(
      ResrtError,
    );
  });
});
