/**
 * The dashboard page: static HTML with inline script and style, no dependencies. It renders the
 * snapshots the server streams (/events) and POSTs commands (/api/control, /api/teleop).
 * Keyboard teleop: tick "intervene", pick a robot, hold A/D (axis 0), W/S (axis 1), J/L (axis 2),
 * I/K (axis 3); the page sends the command 20 times a second while the box is ticked, so a closed
 * tab or a lost network goes quiet and the safety layer's teleop timeout hands control back.
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
svg{border:1px solid #ccc;background:#fff}
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
<div>
<label><input type="checkbox" id="intervene" data-testid="intervene"> intervene (keyboard teleop)</label>
robot <select id="teleopRobot" data-testid="teleop-robot"></select>
<span id="teleopState" data-testid="teleop-state">idle</span>
</div>
<div class="row">
<div><div>learning curve: success rate (last 20 episodes) vs episodes</div><svg id="curve" width="420" height="160"></svg></div>
<div><div>episode returns</div><svg id="returns" width="420" height="160"></svg></div>
</div>
<script>
const params = new URLSearchParams(location.search);
const token = params.get('token');
const q = token ? '?token=' + encodeURIComponent(token) : '';
let robots = [];
let actionDim = 2;
function post(path, body) {
  return fetch(path + q, {method: 'POST', headers: {'content-type': 'application/json', 'x-resrt': '1'}, body: JSON.stringify(body)});
}
function control(robot, c) { return post('/api/control', Object.assign({robot}, c)); }
function fmt(v, d) { return v === null || v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(d); }
function button(label, id, js, cls) {
  return '<button data-testid="' + id + '"' + (cls ? ' class="' + cls + '"' : '') + ' onclick="' + js + '">' + label + '</button>';
}
function line(svg, points, yMin, yMax, color) {
  const el = document.getElementById(svg);
  const w = el.clientWidth || 420, h = el.clientHeight || 160;
  if (!points.length) { el.innerHTML = ''; return; }
  const xs = points.map(p => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const sx = x => 4 + (w - 8) * (x - x0) / (x1 - x0);
  const sy = y => h - 4 - (h - 8) * (y - yMin) / Math.max(1e-9, yMax - yMin);
  el.innerHTML = '<polyline fill="none" stroke="' + color + '" stroke-width="1.5" points="' +
    points.map(p => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join(' ') + '"/>';
}
function esc(t) { return String(t).replace(/[<>&"]/g, c => '&#' + c.charCodeAt(0) + ';'); }
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
  if (ids.join() !== robots.join()) {
    robots = ids;
    document.getElementById('teleopRobot').innerHTML = ids.map(id => '<option>' + id + '</option>').join('');
  }
  line('curve', (s.curve || []).map(p => [p.episodes, p.successRate]), 0, 1, '#06c');
  const rets = (s.returns || []).map((p, i) => [i, p.ret]);
  const ys = rets.map(p => p[1]);
  line('returns', rets, Math.min(0, ...ys), Math.max(1, ...ys), '#c60');
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
setInterval(() => {
  const on = document.getElementById('intervene').checked;
  const robot = document.getElementById('teleopRobot').value;
  if (!on) {
    if (wasOn) post('/api/teleop', {robot, action: null});
    wasOn = false;
    document.getElementById('teleopState').textContent = 'idle';
    return;
  }
  wasOn = true;
  const dim = actionDim;
  const action = [];
  for (let i = 0; i < dim; i++) {
    const [neg, pos] = axes[i] || ['', ''];
    action.push((keys.has(pos) ? 0.5 : 0) - (keys.has(neg) ? 0.5 : 0));
  }
  document.getElementById('teleopState').textContent = 'sending ' + JSON.stringify(action);
  post('/api/teleop', {robot, action});
}, 50);
</script>
</body></html>`;
}
