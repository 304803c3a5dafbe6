/**
 * Learning curves of a run: one point per evaluation, written as CSV and JSON Lines (rewritten
 * atomically each time, so a crash never leaves half a row) and as a hand-written SVG plot of the
 * success rate (with its 95% interval) against environment steps.
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../util/files.js';

export interface CurvePoint {
  envSteps: number;
  updates: number;
  wallSeconds: number;
  episodes: number;
  /** Evaluation (no exploration noise). */
  successRate: number;
  ciLow: number;
  ciHigh: number;
  evalEpisodes: number;
  /** Success over the last (up to) 100 training episodes, with exploration noise. */
  trainSuccessRate: number | null;
  qMean: number | null;
  criticLoss: number | null;
  actorLoss: number | null;
  updatesPerSec: number | null;
}

const columns: (keyof CurvePoint)[] = [
  'envSteps',
  'updates',
  'wallSeconds',
  'episodes',
  'successRate',
  'ciLow',
  'ciHigh',
  'evalEpisodes',
  'trainSuccessRate',
  'qMean',
  'criticLoss',
  'actorLoss',
  'updatesPerSec',
];

export function curvesCsv(points: readonly CurvePoint[]): string {
  const rows = points.map((p) => columns.map((c) => (p[c] === null ? '' : String(p[c]))).join(','));
  return [columns.join(','), ...rows].join('\n') + '\n';
}

export function writeCurves(outDir: string, points: readonly CurvePoint[], title: string): void {
  writeFileAtomic(join(outDir, 'curves.csv'), curvesCsv(points));
  writeFileAtomic(join(outDir, 'curves.jsonl'), points.map((p) => JSON.stringify(p)).join('\n') + '\n');
  writeFileAtomic(join(outDir, 'success.svg'), successSvg([{ label: 'residual', points }], title));
}

export interface CurveSeries {
  label: string;
  points: readonly Pick<CurvePoint, 'envSteps' | 'successRate' | 'ciLow' | 'ciHigh'>[];
}

const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Success rate (0..1) vs env steps, one line + CI band per series. */
export function successSvg(series: readonly CurveSeries[], title: string, width = 640, height = 400): string {
  const m = { l: 56, r: 16, t: 32, b: 44 };
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  const maxX = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.envSteps)));
  const x = (v: number): number => m.l + (v / maxX) * w;
  const y = (v: number): number => m.t + (1 - v) * h;
  const f = (v: number): string => v.toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = i / 5;
    out.push(
      `<line x1="${m.l}" y1="${f(y(v))}" x2="${m.l + w}" y2="${f(y(v))}" stroke="#ddd"/>`,
      `<text x="${m.l - 6}" y="${f(y(v) + 4)}" text-anchor="end">${Math.round(v * 100)}%</text>`,
    );
    const xv = (maxX * i) / 5;
    out.push(`<text x="${f(x(xv))}" y="${m.t + h + 16}" text-anchor="middle">${formatSteps(xv)}</text>`);
  }
  out.push(
    `<rect x="${m.l}" y="${m.t}" width="${w}" height="${h}" fill="none" stroke="#333"/>`,
    `<text x="${m.l + w / 2}" y="${height - 8}" text-anchor="middle">environment steps</text>`,
    `<text x="14" y="${m.t + h / 2}" text-anchor="middle" transform="rotate(-90 14 ${m.t + h / 2})">success rate</text>`,
  );
  series.forEach((s, k) => {
    const color = palette[k % palette.length];
    if (s.points.length === 0) return;
    const band = [
      ...s.points.map((p) => `${f(x(p.envSteps))},${f(y(p.ciHigh))}`),
      ...[...s.points].reverse().map((p) => `${f(x(p.envSteps))},${f(y(p.ciLow))}`),
    ].join(' ');
    out.push(`<polygon points="${band}" fill="${color}" fill-opacity="0.15" stroke="none"/>`);
    const line = s.points.map((p) => `${f(x(p.envSteps))},${f(y(p.successRate))}`).join(' ');
    out.push(`<polyline points="${line}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const p of s.points)
      out.push(`<circle cx="${f(x(p.envSteps))}" cy="${f(y(p.successRate))}" r="2.5" fill="${color}"/>`);
    out.push(
      `<rect x="${m.l + 10}" y="${m.t + 8 + k * 16}" width="12" height="3" fill="${color}"/>`,
      `<text x="${m.l + 28}" y="${m.t + 13 + k * 16}">${esc(s.label)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function formatSteps(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(v));
}
