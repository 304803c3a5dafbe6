/**
 * The dashboard page: static HTML with inline script and style, no dependencies. It renders the
 * snapshots the server streams (/events) and POSTs commands (/api/control, /api/teleop).
 * Keyboard teleop: tick "intervene", pick a robot, hold A/D (axis 0), W/S (axis 1), J/L (axis 2),
 * I/K (axis 3); the page sends the command 20 times a second while the box is ticked, so a closed
 * tab or a lost network goes quiet and the safety layer's teleop timeout hands control back.
 * Gamepad teleop (the browser's Gamepad API, standard mapping): hold LB (button 4) or tick the box
 * to intervene; sticks drive axes 0-3 (left x, left y up, right x, right y up), RT − LT axis 4,
 * B − A axis 5; Y labels the episode a success, X a failure (as s / esc do in LeRobot's HIL-SERL).
 */
export function dashboardPage(title: string): string {
  const safeTitle = title.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${safeTitle}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}
td.l,th.l{text-align:left}
button{margin:1px;padding:3px 8px}
button.estop{background:#c00;color:#fff;font-weight:bold}
#conn{font-size:12px;color:#666}
.row{display:flex;gap:24px;flex-wrap:wrap}
svg{border:1px solid #ccc;background:#fff;font:11px system-ui,sans-serif}
figure{margin:8px 0}
figcaption{margin-bottom:2px}
svg .axis{stroke:#444}
svg .grid{stroke:#eee}
svg .tick{fill:#444}
svg .title{fill:#222}
#storage div{font-size:12px;color:#444}
#storage div.stopped{color:#c00;font-weight:bold}
</style></head>
<body>
<h1>${safeTitle}</h1>
<div id="conn" data-testid="conn">connecting…</div>
<div id="learner" data-testid="learner"></div>
<div id="storage" data-testid="storage"></div>
<button class="estop" data-testid="estop-all" onclick="control('', {cmd:'estop', source:'dashboard'})">E-STOP ALL</button>
<table id="robots"><thead><tr>
<th class="l">robot</th><th>phase</th><th>residual</th><th>episodes</th><th>success (last 20)</th>
<th>last return</th><th>exploring share</th><th>interventions</th><th>safety events</th><th>loop p50/p99 ms</th><th>unacked</th><th class="l">controls</th>
</tr></thead><tbody></tbody></table>
<div id="cameras" data-testid="cameras" class="row"></div>
<div>
<label><input type="checkbox" id="intervene" data-testid="intervene"> intervene (keyboard teleop)</label>
<span id="gamepad" data-testid="gamepad">no gamepad</span>
robot <select id="teleopRobot" data-testid="teleop-robot"></select>
<span id="teleopState" data-testid="teleop-state">idle</span>
</div>
<div class="row">
<figure><figcaption>success rate over the last 20 episodes, by episode</figcaption>
<svg id="curveEpisodes" data-testid="chart-episodes" width="440" height="220"></svg></figure>
<figure><figcaption>success rate over the last 20 episodes, by env step</figcaption>
<svg id="curveSteps" data-testid="chart-steps" width="440" height="220"></svg></figure>
<figure><figcaption>episode returns (green: success, red: failure)</figcaption>
<svg id="returns" data-testid="chart-returns" width="440" height="220"></svg></figure>
</div>
<script>
const params = new URLSearchParams(location.search);
const token = params.get('token');
const q = token ? '?token=' + encodeURIComponent(token) : '';
let robots = [];
let actionDim = 2;
function post(path, body, signal) {
  return fetch(path + q, {method: 'POST', headers: {'content-type': 'application/json', 'x-resrt': '1'}, body: JSON.stringify(body), signal});
}
// Each robot's latest camera frames: the images are made once per set of cameras and their
// sources refreshed every second (rebuilding them with the table every 250 ms would flicker).
let cameraKeys = '';
function frameUrl(robot, camera) {
  return '/frame/' + encodeURIComponent(robot) + '/' + encodeURIComponent(camera) + '.jpg' + (q ? q + '&' : '?') + 't=' + Date.now();
}
function renderCameras(pairs) {
  const keys = JSON.stringify(pairs);
  if (keys === cameraKeys) return;
  cameraKeys = keys;
  document.getElementById('cameras').innerHTML = pairs.map(([robot, camera]) =>
    '<figure><figcaption>' + esc(robot + ' / ' + camera) + '</figcaption><img width="168" data-robot="' + encodeURIComponent(robot) +
    '" data-camera="' + encodeURIComponent(camera) + '" data-testid="' + esc('frame-' + robot + '-' + camera) + '" alt="latest frame"></figure>').join('');
  refreshFrames();
}
function refreshFrames() {
  for (const img of document.querySelectorAll('#cameras img'))
    img.src = frameUrl(decodeURIComponent(img.dataset.robot), decodeURIComponent(img.dataset.camera));
}
setInterval(refreshFrames, 1000);
function control(robot, c) { return post('/api/control', Object.assign({robot}, c)); }
// Teleop posts go one at a time and only the newest waits: fetches in flight together can land out
// of order, and an action landing after the release would leave the robot under teleop.
let teleopBusy = false, teleopWaiting = null;
function sendTeleop(body) {
  if (teleopBusy) { teleopWaiting = body; return; }
  teleopBusy = true;
  // A post that hangs gives up after 2 s, so the queue never waits on it for ever.
  post('/api/teleop', body, AbortSignal.timeout(2000))
    .catch(() => {})
    .finally(() => {
      teleopBusy = false;
      const next = teleopWaiting;
      teleopWaiting = null;
      if (next) sendTeleop(next);
    });
}
function fmt(v, d) { return v === null || v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(d); }
function button(label, id, js, cls) {
  return '<button data-testid="' + id + '"' + (cls ? ' class="' + cls + '"' : '') + ' onclick="' + js + '">' + label + '</button>';
}
// Charts drawn as SVG with axes, ticks and units; no libraries.
const M = {left: 50, right: 14, top: 10, bottom: 40};
function niceStep(span, count) {
  const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
  return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
}
function ticks(lo, hi, count, integer) {
  const step = Math.max(integer ? 1 : 0, niceStep(Math.max(hi - lo, 1e-9), count));
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}
function tickText(v, step) {
  const a = Math.abs(v);
  if (a >= 1e6) return +(v / 1e6).toFixed(step >= 1e6 ? 0 : 1) + 'M';
  if (a >= 1e3 && step >= 100) return +(v / 1e3).toFixed(step >= 1e3 ? 0 : 1) + 'k';
  return String(+v.toFixed(Math.max(0, -Math.floor(Math.log10(step)))));
}
function esc(t) { return String(t).replace(/[<>&"]/g, c => '&#' + c.charCodeAt(0) + ';'); }
// opts: xLabel, yLabel, yMin, yMax, yPercent, lines [[x,y]...], dots [{x,y,color}], evals [{x,y,lo,hi,label}]
function chart(id, opts) {
  const el = document.getElementById(id);
  const w = el.clientWidth || 440, h = el.clientHeight || 220;
  const pw = w - M.left - M.right, ph = h - M.top - M.bottom;
  const xsAll = [].concat(opts.line.map(p => p[0]), opts.dots.map(d => d.x), opts.evals.map(e => e.x));
  // Episodes and env steps are counts: whole-number ticks, from 0.
  const x1 = Math.max(5, ...xsAll);
  const xt = ticks(0, x1, 5, true), yt = ticks(opts.yMin, opts.yMax, 4, false);
  const xStep = xt.length > 1 ? xt[1] - xt[0] : 1, yStep = yt.length > 1 ? yt[1] - yt[0] : 1;
  const xMax = Math.max(x1, xt[xt.length - 1]);
  const sx = x => M.left + pw * x / xMax;
  const sy = y => M.top + ph - ph * (y - opts.yMin) / Math.max(1e-9, opts.yMax - opts.yMin);
  const out = [];
  for (const v of yt) {
    out.push('<line class="grid" x1="' + M.left + '" x2="' + (M.left + pw) + '" y1="' + sy(v) + '" y2="' + sy(v) + '"/>');
    out.push('<text class="tick" data-axis="y" x="' + (M.left - 6) + '" y="' + (sy(v) + 4) + '" text-anchor="end">' +
      (opts.yPercent ? Math.round(v * 100) + '%' : tickText(v, yStep)) + '</text>');
  }
  for (const v of xt) {
    out.push('<line class="axis" x1="' + sx(v) + '" x2="' + sx(v) + '" y1="' + (M.top + ph) + '" y2="' + (M.top + ph + 4) + '"/>');
    out.push('<text class="tick" data-axis="x" x="' + sx(v) + '" y="' + (M.top + ph + 16) + '" text-anchor="middle">' + tickText(v, xStep) + '</text>');
  }
  out.push('<line class="axis" x1="' + M.left + '" x2="' + M.left + '" y1="' + M.top + '" y2="' + (M.top + ph) + '"/>');
  out.push('<line class="axis" x1="' + M.left + '" x2="' + (M.left + pw) + '" y1="' + (M.top + ph) + '" y2="' + (M.top + ph) + '"/>');
  out.push('<text class="title" data-axis="x" x="' + (M.left + pw / 2) + '" y="' + (h - 6) + '" text-anchor="middle">' + esc(opts.xLabel) + '</text>');
  out.push('<text class="title" data-axis="y" transform="translate(12,' + (M.top + ph / 2) + ') rotate(-90)" text-anchor="middle">' + esc(opts.yLabel) + '</text>');
  if (opts.line.length)
    out.push('<polyline data-series="line" fill="none" stroke="' + opts.color + '" stroke-width="1.5" points="' +
      opts.line.map(p => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join(' ') + '"/>');
  for (const d of opts.dots)
    out.push('<circle data-series="dot" cx="' + sx(d.x).toFixed(1) + '" cy="' + sy(d.y).toFixed(1) + '" r="2.2" fill="' + d.color + '"/>');
  for (const e of opts.evals) {
    const x = sx(e.x).toFixed(1);
    out.push('<g data-series="evaluation"><title>' + esc(e.label + ': ' + Math.round(e.y * 100) + '% (95% CI ' + Math.round(e.lo * 100) + '–' + Math.round(e.hi * 100) + '%)') + '</title>' +
      '<line x1="' + x + '" x2="' + x + '" y1="' + sy(e.lo).toFixed(1) + '" y2="' + sy(e.hi).toFixed(1) + '" stroke="#222"/>' +
      '<circle cx="' + x + '" cy="' + sy(e.y).toFixed(1) + '" r="4" fill="#fff" stroke="#222" stroke-width="1.5"/></g>');
  }
  if (opts.evals.length)
    out.push('<text class="tick" x="' + (M.left + 6) + '" y="' + (M.top + 10) + '">○ with bar: ' +
      esc([...new Set(opts.evals.map(e => e.label))].join(', ')) + ', 95% interval</text>');
  if (!opts.line.length && !opts.dots.length)
    out.push('<text class="tick" data-empty="1" x="' + (M.left + pw / 2) + '" y="' + (M.top + ph / 2) + '" text-anchor="middle">no episodes yet</text>');
  el.innerHTML = out.join('');
}
// Disk limits (docs/sessions.md): one line per side, red with the reason when it stopped collection.
function storageLine(id, what, st) {
  if (!st) return '';
  const m = b => (b / 1048576).toFixed(1);
  return '<div data-testid="storage-' + esc(id) + '"' + (st.stopped ? ' class="stopped"' : '') + '>' + esc(what) + ': ' +
    m(st.usedBytes) + ' of ' + m(st.limitBytes) + ' MiB, ' + (st.freeBytes === null ? '?' : m(st.freeBytes)) + ' MiB free' +
    (st.stopped ? ' – ' + esc(st.stopped) : '') + '</div>';
}
function renderStorage(s) {
  const L = s.learner;
  let html = L ? storageLine('learner', 'write-ahead log (' + (L.storage ? L.storage.compactedSegments + ' of ' + L.storage.segments + ' segments compacted' : '') + ')', L.storage) : '';
  for (const id of Object.keys(s.robots || {}).sort())
    html += storageLine(id, id + ' spool (unacknowledged)', s.robots[id].storage);
  document.getElementById('storage').innerHTML = html;
}
function render(s) {
  renderStorage(s);
  if (s.actionDim) actionDim = s.actionDim;
  const L = s.learner;
  document.getElementById('learner').innerHTML = L ?
    '<table><tr><th>learner</th><th>residual version</th><th>updates</th><th>updates/s</th><th>transitions</th><th>episodes</th><th>success (last 20)</th><th>intervention rate</th><th class="l">phase</th></tr>' +
    '<tr><td>' + (L.online ? 'online' : 'offline') + '</td><td data-testid="learner-version">' + L.version + '</td><td data-testid="learner-updates">' + L.updates +
    '</td><td>' + fmt(L.updatesPerSec, 1) + '</td><td data-testid="learner-transitions">' + L.ingested + '</td><td data-testid="learner-episodes">' + L.episodes +
    '</td><td data-testid="learner-success">' + fmt(L.successRate, 2) + '</td><td>' + fmt(L.interventionRate, 3) + '</td><td class="l">' + (L.warmup ? 'warm-up' : 'training') + '</td></tr></table>' +
    '<div data-testid="learner-labels">person labels: ' + (L.labels || 0) + ', labelled successes: ' + (L.labelledSuccesses || 0) + '</div>' : '';
  const ids = Object.keys(s.robots || {}).sort();
  const tbody = document.querySelector('#robots tbody');
  tbody.innerHTML = ids.map(id => {
    const r = s.robots[id];
    const rid = JSON.stringify(id).replace(/"/g, '&quot;');
    return '<tr data-testid="robot-' + id + '"><td class="l">' + id + (r.online === false ? ' (offline)' : '') + '</td>' +
      '<td data-testid="phase-' + id + '">' + (r.phase || '–') + '</td>' +
      '<td data-testid="version-' + id + '">' + fmt(r.residualVersion, 0) + '</td>' +
      '<td data-testid="episodes-' + id + '">' + fmt(r.episodes, 0) + '</td>' +
      '<td>' + fmt(r.recentSuccessRate, 2) + '</td><td>' + fmt(r.lastReturn, 2) + '</td>' +
      '<td data-testid="share-' + id + '">' + fmt(r.mixingShare, 2) + '</td>' +
      '<td>' + fmt(r.interventionSteps, 0) + '</td><td>' + fmt(r.safetyEvents, 0) + '</td>' +
      '<td data-testid="latency-' + id + '">' + (r.latencyMs ? fmt(r.latencyMs.p50, 2) + ' / ' + fmt(r.latencyMs.p99, 2) : '–') + '</td>' +
      '<td>' + fmt(r.pendingTransitions, 0) + '</td><td class="l">' +
      button('e-stop', 'estop-' + id, "control(" + rid + ", {cmd:'estop', source:'dashboard'})", 'estop') +
      button('reset e-stop', 'reset-estop-' + id, "control(" + rid + ", {cmd:'reset-estop'})") +
      button('pause', 'pause-' + id, "control(" + rid + ", {cmd:'pause'})") +
      button('resume', 'resume-' + id, "control(" + rid + ", {cmd:'resume'})") +
      button('success', 'success-' + id, "control(" + rid + ", {cmd:'label', success:true})") +
      button('failure', 'failure-' + id, "control(" + rid + ", {cmd:'label', success:false})") +
      button('reset done', 'confirm-reset-' + id, "control(" + rid + ", {cmd:'confirm-reset'})") +
      '</td></tr>';
  }).join('');
  renderCameras(ids.flatMap(id => (s.robots[id].cameras || []).map(c => [id, c])));
  if (ids.join() !== robots.join()) {
    robots = ids;
    document.getElementById('teleopRobot').innerHTML = ids.map(id => '<option>' + id + '</option>').join('');
  }
  const curve = s.curve || [], evals = s.evaluations || [], rets = s.returns || [];
  const success = {yMin: 0, yMax: 1, yPercent: true, yLabel: 'success rate (%)', color: '#06c', dots: []};
  chart('curveEpisodes', Object.assign({}, success, {xLabel: 'episodes',
    line: curve.map(p => [p.episodes, p.successRate]),
    evals: evals.map(e => ({x: e.episodes, y: e.successRate, lo: e.ciLow, hi: e.ciHigh, label: e.label}))}));
  chart('curveSteps', Object.assign({}, success, {xLabel: 'env steps',
    line: curve.map(p => [p.envSteps, p.successRate]),
    evals: evals.map(e => ({x: e.envSteps, y: e.successRate, lo: e.ciLow, hi: e.ciHigh, label: e.label}))}));
  const ys = rets.map(p => p.ret);
  chart('returns', {xLabel: 'episodes', yLabel: 'return (sum of rewards)', yMin: Math.min(0, ...ys), yMax: Math.max(1, ...ys),
    line: [], evals: [], color: '#c60',
    dots: rets.map(p => ({x: p.episodes, y: p.ret, color: p.success ? '#2ca02c' : '#d62728'}))});
}
function connect() {
  const es = new EventSource('/events' + q);
  es.onopen = () => { document.getElementById('conn').textContent = 'live'; };
  es.onmessage = (e) => { document.getElementById('conn').textContent = 'live ' + new Date().toLocaleTimeString(); render(JSON.parse(e.data)); };
  es.onerror = () => { document.getElementById('conn').textContent = 'disconnected, retrying…'; };
}
connect();
const keys = new Set();
const axes = [['a', 'd'], ['s', 'w'], ['j', 'l'], ['k', 'i']];
addEventListener('keydown', e => { keys.add(e.key.toLowerCase()); });
addEventListener('keyup', e => { keys.delete(e.key.toLowerCase()); });
let wasOn = false;
const DEADZONE = 0.1;
let padButtons = [];
function pad() {
  const pads = navigator.getGamepads ? Array.from(navigator.getGamepads()).filter(Boolean) : [];
  return pads.length ? pads[0] : null;
}
function pressed(p, i) { const b = p.buttons[i]; return b ? (typeof b === 'object' ? b.pressed || b.value > 0.5 : b > 0.5) : false; }
function value(p, i) { const b = p.buttons[i]; return b ? (typeof b === 'object' ? b.value : b) : 0; }
function padAction(p, dim) {
  const dz = v => Math.abs(v) < DEADZONE ? 0 : v;
  const ax = [dz(p.axes[0] || 0), -dz(p.axes[1] || 0), dz(p.axes[2] || 0), -dz(p.axes[3] || 0), value(p, 7) - value(p, 6), (pressed(p, 1) ? 1 : 0) - (pressed(p, 0) ? 1 : 0)];
  const out = [];
  for (let i = 0; i < dim; i++) out.push(Math.max(-1, Math.min(1, ax[i] || 0)));
  return out;
}
setInterval(() => {
  const p = pad();
  const robot = document.getElementById('teleopRobot').value;
  document.getElementById('gamepad').textContent = p ? 'gamepad: ' + p.id : 'no gamepad';
  if (p) {
    // Labels on the press, not while held.
    if (pressed(p, 3) && !padButtons[3]) control(robot, {cmd: 'label', success: true});
    if (pressed(p, 2) && !padButtons[2]) control(robot, {cmd: 'label', success: false});
    padButtons = p.buttons.map((_, i) => pressed(p, i));
  }
  const usePad = p && pressed(p, 4);
  const on = document.getElementById('intervene').checked || usePad;
  if (!on) {
    if (wasOn) sendTeleop({robot, action: null});
    wasOn = false;
    document.getElementById('teleopState').textContent = 'idle';
    return;
  }
  wasOn = true;
  const dim = actionDim;
  let action = [];
  if (p && (usePad || p.axes.some(v => Math.abs(v) >= DEADZONE))) action = padAction(p, dim);
  else {
    for (let i = 0; i < dim; i++) {
      const [neg, pos] = axes[i] || ['', ''];
      action.push((keys.has(pos) ? 0.5 : 0) - (keys.has(neg) ? 0.5 : 0));
    }
  }
  document.getElementById('teleopState').textContent = 'sending ' + JSON.stringify(action);
  sendTeleop({robot, action});
}, 50);
</script>
</body></html>`;
}
