/*
 * charts.js: live metric charts (vendored uPlot + the /ws/metrics/ socket of live.js).
 *
 * Markup (templates/monitoring/_charts.html):
 *   <section data-metrics-charts data-group="deployment.7" data-query="deployment=7"
 *            data-window="900" data-charts='[{"title": ..., "names": [...], "mode": "series"}]'>
 *     <div data-chart="0"></div> ...
 *
 * On load the section fetches the REST snapshot (/api/v1/metrics/?<query>&window=...),
 * then subscribes to its group on the socket and appends the points of every
 * "metrics.points" message. Messages carry (epoch, seq) per group: a gap in seq within one
 * epoch, or a reconnect, means points may be missing, so the snapshot is fetched again and
 * merged (points are keyed by series and time, so nothing is doubled). Charts redraw at most
 * once per animation frame. Each chart's element gets data-points (points drawn), data-max
 * (the largest value drawn) and the
 * section data-state ("loading", "live", "resyncing", "error") for tests and people.
 */
(function () {
  'use strict';

  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2',
                  '#ca8a04', '#db2777', '#4b5563', '#65a30d'];
  const LABELS = {
    requests_running: 'running', requests_waiting: 'waiting',
    prompt_tokens_per_s: 'prompt', generated_tokens_per_s: 'generated',
    time_to_first_token_s: 'TTFT', time_per_token_s: 'per token',
    kv_cache_usage: 'KV cache', cpu_percent: 'CPU', memory_bytes: 'memory',
    memory_used_bytes: 'RAM used', disk_used_bytes: 'disk used',
    gpu_utilization_percent: 'util', gpu_memory_used_bytes: 'memory',
    gpu_temperature_c: 'temp', restarts: 'restarts',
  };

  function short(value) {
    // 1.2k, 3.4M, 5.6G for big figures (bytes, tokens); 3 significant digits for small ones
    if (value === null || value === undefined) return '';
    const size = Math.abs(value);
    for (const [unit, scale] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]]) {
      if (size >= scale) return +(value / scale).toPrecision(3) + unit;
    }
    return size === 0 ? '0' : String(+value.toPrecision(3));
  }

  function owner(series, group) {
    if (series.device !== '') return 'GPU ' + series.device;
    if (series.replica) return 'replica ' + series.replica;
    return group === 'fleet' ? 'node ' + series.node : '';
  }

  class ChartSection {
    constructor(root) {
      this.root = root;
      this.group = root.dataset.group;
      this.query = root.dataset.query;
      this.windowS = parseInt(root.dataset.window || '900', 10);
      this.specs = JSON.parse(root.dataset.charts);
      this.series = new Map();   // series id -> {meta, points: Map(t_ms -> value)}
      this.seq = new Map();      // epoch -> last seq seen
      this.plots = [];           // per chart: {plot, key}
      this.frame = null;
      this.resyncing = null;
      this.setState('loading');
      this.resync();
      this.connect();
    }

    setState(state) { this.root.dataset.state = state; }

    async resync() {
      if (this.resyncing) { this.again = true; return this.resyncing; }  // once more after
      this.setState('resyncing');
      const url = '/api/v1/metrics/?' + this.query + '&window=' + this.windowS;
      this.resyncing = fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/json'}})
        .then((answer) => {
          if (!answer.ok) throw new Error('snapshot answered ' + answer.status);
          return answer.json();
        })
        .then((snapshot) => {
          for (const s of snapshot.series) {
            const entry = this.entry(s);
            for (const [t, v] of s.points) entry.points.set(t, v);
          }
          this.setState('live');
          this.schedule();
        })
        .catch((err) => {
          console.warn('charts: resync failed', err);
          this.setState('error');
        })
        .finally(() => {
          this.resyncing = null;
          if (this.again) { this.again = false; this.resync(); }
        });
      return this.resyncing;
    }

    entry(meta) {
      let entry = this.series.get(meta.id);
      if (!entry) {
        entry = {meta: meta, points: new Map()};
        this.series.set(meta.id, entry);
      }
      return entry;
    }

    connect() {
      if (!window.FleetSocket) return;
      this.socket = new window.FleetSocket('/ws/metrics/', {
        statusElement: document.getElementById('live-status'),
        onOpen: (isReconnect) => {
          this.socket.send({subscribe: this.group});
          if (isReconnect) { this.seq.clear(); this.resync(); }
        },
        onMessage: (message) => this.receive(message),
      });
    }

    receive(message) {
      if (message.type === 'subscribed' && message.payload.group === this.group) {
        this.resync();  // points stored between the first snapshot and the subscription
        return;
      }
      if (message.type !== 'metrics.points') return;
      const payload = message.payload;
      if (payload.group !== this.group) return;
      const last = this.seq.get(payload.epoch);
      this.seq.set(payload.epoch, payload.seq);
      for (const row of payload.points) {
        const [id, node, deployment, replica, name, device, t, value] = row;
        this.entry({id, node, deployment, replica, name, device}).points.set(t, value);
      }
      if (last !== undefined && payload.seq !== last + 1) {
        this.root.dataset.gaps = String(parseInt(this.root.dataset.gaps || '0', 10) + 1);
        this.resync();  // a message went missing: fetch what we may not have
      }
      this.root.dataset.lastPointMs = String(Date.now());
      this.schedule();
    }

    schedule() {
      if (this.frame !== null) return;
      this.frame = requestAnimationFrame(() => { this.frame = null; this.render(); });
    }

    lines(spec) {
      // [{label, points: Map}] for one chart: one line per series, or one sum per name
      const since = Date.now() - this.windowS * 1000;
      const picked = [...this.series.values()].filter((e) => spec.names.includes(e.meta.name));
      for (const e of picked) {
        for (const t of e.points.keys()) if (t < since) e.points.delete(t);
      }
      if (spec.mode !== 'sum') {
        return picked
          .sort((a, b) => a.meta.id - b.meta.id)
          .map((e) => ({
            label: [LABELS[e.meta.name] || e.meta.name, owner(e.meta, this.group)]
              .filter(Boolean).join(' '),
            points: e.points,
          }));
      }
      const bucketMs = 5000;
      return spec.names.map((name) => {
        const sums = new Map();
        for (const e of picked) {
          if (e.meta.name !== name) continue;
          for (const [t, v] of e.points) {
            const b = Math.floor(t / bucketMs) * bucketMs;
            sums.set(b, (sums.get(b) || 0) + v);
          }
        }
        return {label: (LABELS[name] || name) + ' (sum)', points: sums};
      });
    }

    render() {
      this.specs.forEach((spec, index) => {
        const element = this.root.querySelector('[data-chart="' + index + '"]');
        if (!element) return;
        const lines = this.lines(spec);
        const times = new Set();
        for (const line of lines) for (const t of line.points.keys()) times.add(t);
        const xs = [...times].sort((a, b) => a - b);
        const data = [xs.map((t) => t / 1000)];
        let drawn = 0, max = null;
        for (const line of lines) {
          data.push(xs.map((t) => {
            const v = line.points.get(t);
            if (v === undefined) return null;
            drawn += 1;
            if (max === null || v > max) max = v;
            return v;
          }));
        }
        element.dataset.points = String(drawn);
        if (max !== null) element.dataset.max = String(max);
        const empty = element.parentElement.querySelector('[data-chart-empty]');
        if (empty) empty.hidden = drawn > 0;
        element.hidden = drawn === 0;  // the short message alone, not an empty frame above it
        const key = lines.map((l) => l.label).join('|');
        let slot = this.plots[index];
        if (!window.uPlot) return;
        if (drawn === 0 && !slot) return;  // drawn once there is something to draw
        if (!slot || slot.key !== key) {
          if (slot) slot.plot.destroy();
          const opts = {
            width: Math.max(240, element.clientWidth || 320),
            height: 160,
            legend: {show: true},
            scales: {x: {time: true}},
            series: [{}].concat(lines.map((l, i) => ({
              label: l.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
            }))),
            axes: [{}, {size: 64, values: (u, ticks) => ticks.map(short)}],
          };
          slot = this.plots[index] = {plot: new window.uPlot(opts, data, element), key: key};
        } else {
          slot.plot.setData(data);
        }
      });
    }
  }

  function mountAll() {
    document.querySelectorAll('[data-metrics-charts]').forEach((root) => {
      if (!root.fleetCharts) root.fleetCharts = new ChartSection(root);
    });
  }

  window.FleetCharts = {mountAll: mountAll, ChartSection: ChartSection};
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', mountAll);
  } else {
    mountAll();
  }
})();
