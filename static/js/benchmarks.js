/*
 * benchmarks.js: the plots of a benchmark run and of the compare page (vendored uPlot).
 *
 * Markup (templates/benchmarks/_charts.html): a <script id="bench-series"> with one line per
 * run and target ({label, x, output_tokens_per_s, ttft_p50_ms, latency_p99_ms, itl_p50_ms})
 * and a [data-bench-charts] box of <figure data-chart="<figure name>">. Each figure is drawn
 * against concurrency (or rate); lines with other x values are aligned on the union of x.
 * A live run's body is re-rendered by jobs.js when the job changes state: new chart boxes
 * are found by a MutationObserver and drawn once (data-drawn).
 */
(function () {
  'use strict';

  const COLOURS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];

  function align(lines, figure) {
    const xs = Array.from(new Set(lines.flatMap(function (l) { return l.x; }))).sort(function (a, b) { return a - b; });
    const data = [xs];
    lines.forEach(function (line) {
      data.push(xs.map(function (x) {
        const i = line.x.indexOf(x);
        return i < 0 ? null : line[figure][i];
      }));
    });
    return data;
  }

  function draw(box) {
    if (box.dataset.drawn || typeof uPlot === 'undefined') return;
    const source = document.getElementById('bench-series');
    if (!source) return;
    const lines = JSON.parse(source.textContent);
    box.dataset.drawn = '1';
    box.querySelectorAll('figure[data-chart]').forEach(function (figure) {
      const name = figure.dataset.chart;
      const width = Math.max(280, figure.clientWidth || 320);
      const series = [{ label: box.dataset.xLabel || 'concurrency' }];
      lines.forEach(function (line, i) {
        series.push({ label: line.label, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: true } });
      });
      const opts = {
        title: figure.dataset.title, width: width, height: 200, series: series,
        scales: { x: { time: false } },
        axes: [{ label: box.dataset.xLabel || 'concurrency' }, {}],
      };
      new uPlot(opts, align(lines, name), figure);
      figure.dataset.points = String(lines.reduce(function (n, l) { return n + l.x.length; }, 0));
    });
  }

  function drawAll() { document.querySelectorAll('[data-bench-charts]').forEach(draw); }

  function start() {
    drawAll();
    new MutationObserver(drawAll).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
  window.addEventListener('load', drawAll);  // uPlot is deferred too
})();
