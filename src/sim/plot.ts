/** Top-down SVG of episode trajectories, so a user can see what a policy does. */
import type { PlotMarker } from './task.js';

export interface EpisodeTrace {
  /** Named point sequences, e.g. { tip: [[x, y], ...] }. */
  traces: Record<string, [number, number][]>;
  markers: PlotMarker[];
  success: boolean;
  label: string;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];

export function renderTrajectoriesSvg(title: string, episodes: EpisodeTrace[], size = 640): string {
  const pts: [number, number][] = [];
  for (const ep of episodes) {
    for (const seq of Object.values(ep.traces)) pts.push(...seq);
    for (const m of ep.markers) pts.push([m.x - m.radius, m.y - m.radius], [m.x + m.radius, m.y + m.radius]);
  }
  if (pts.length === 0) pts.push([0, 0], [1, 1]);
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of pts) {
    minX = Math.min(minX, x);
    maxX = Math.max(maxX, x);
    minY = Math.min(minY, y);
    maxY = Math.max(maxY, y);
  }
  const span = Math.max(maxX - minX, maxY - minY, 1e-3) * 1.1;
  const cx = (minX + maxX) / 2;
  const cy = (minY + maxY) / 2;
  const margin = 40;
  const scale = (size - 2 * margin) / span;
  // SVG y grows downward; the world's y grows upward.
  const sx = (x: number): number => margin + (x - cx + span / 2) * scale;
  const sy = (y: number): number => size - margin - (y - cy + span / 2) * scale;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size + 30}" viewBox="0 0 ${size} ${size + 30}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${size / 2}" y="22" text-anchor="middle" font-size="16">${escapeXml(title)}</text>`,
    `<g transform="translate(0,30)">`,
    `<rect x="${margin}" y="${margin}" width="${size - 2 * margin}" height="${size - 2 * margin}" fill="none" stroke="#ccc"/>`,
  ];
  const names = [...new Set(episodes.flatMap((e) => Object.keys(e.traces)))];
  episodes.forEach((ep) => {
    for (const m of ep.markers) {
      parts.push(
        `<circle cx="${f(sx(m.x))}" cy="${f(sy(m.y))}" r="${f(Math.max(2, m.radius * scale))}" fill="${ep.success ? '#2ca02c' : '#d62728'}" fill-opacity="0.25" stroke="${ep.success ? '#2ca02c' : '#d62728'}"/>`,
      );
    }
    for (const [name, seq] of Object.entries(ep.traces)) {
      if (seq.length === 0) continue;
      const color = PALETTE[names.indexOf(name) % PALETTE.length];
      const d = seq.map(([x, y], i) => `${i ? 'L' : 'M'}${f(sx(x))},${f(sy(y))}`).join('');
      parts.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5" stroke-opacity="0.8"${ep.success ? '' : ' stroke-dasharray="4 3"'}/>`,
      );
      const [ex, ey] = seq[seq.length - 1];
      parts.push(`<circle cx="${f(sx(ex))}" cy="${f(sy(ey))}" r="3" fill="${color}"/>`);
    }
  });
  // Legend and scale bar.
  names.forEach((name, i) => {
    const color = PALETTE[i % PALETTE.length];
    parts.push(
      `<line x1="${margin + 10}" y1="${margin + 14 + i * 16}" x2="${margin + 30}" y2="${margin + 14 + i * 16}" stroke="${color}" stroke-width="2"/>`,
    );
    parts.push(
      `<text x="${margin + 36}" y="${margin + 18 + i * 16}" font-size="12">${escapeXml(name)}</text>`,
    );
  });
  const bar = niceLength(span / 5);
  parts.push(
    `<line x1="${size - margin - 10 - bar * scale}" y1="${size - margin - 10}" x2="${size - margin - 10}" y2="${size - margin - 10}" stroke="black" stroke-width="2"/>`,
  );
  parts.push(
    `<text x="${size - margin - 10 - (bar * scale) / 2}" y="${size - margin - 16}" font-size="11" text-anchor="middle">${bar * 100} cm</text>`,
  );
  parts.push(
    `<text x="${margin}" y="${size - margin + 18}" font-size="11">solid: success, dashed: failure; top-down view (x right, y up)</text>`,
  );
  parts.push('</g></svg>');
  return parts.join('\n');
}

function niceLength(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function f(v: number): string {
  return v.toFixed(1);
}

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string,
  );
}
