/*
 * autoscaling.js: the deployment page's Autoscaling card (templates/deployments/_autoscaling.html).
 *
 * Polls GET <data-autoscaling-url> (/api/v1/deployments/<id>/autoscaling/, session auth) every
 * 2 s while the tab is visible. It fills in the latest decision and the blocked reason, and
 * draws with the vendored uPlot (loaded by the live metrics charts further down the page):
 * desired vs ready replicas, and the signal per ready replica vs the policy's target. Until
 * there are points, the charts stay hidden behind one "No samples yet." line. The card gets
 * data-state ("loading", "live", "error") and data-points (points drawn), as charts.js does.
 */
(function () {
  'use strict';

  const POLL_MS = 2000;
  const HEIGHT = 160;
  const MODES = {panic: 'badge-warn', stable: 'badge-info', wake: 'badge-info'};

  function figure(value) {
    return value === null || value === undefined ? '—' : value.toFixed(2);
  }

  function utcTime(epochS) {  // as the server renders it (TIME_ZONE is UTC)
    return new Date(epochS * 1000).toISOString().slice(11, 19);
  }

  class AutoscalingCard {
    constructor(root) {
      this.root = root;
      this.url = root.dataset.autoscalingUrl;
      this.plots = {};
      window.addEventListener('resize', () => this.resize());
      this.poll();
    }

    async poll() {
      if (!document.hidden) {
        try {
          const answer = await fetch(this.url, {
            credentials: 'same-origin', headers: {Accept: 'application/json'},
          });
          if (!answer.ok) throw new Error('autoscaling status answered ' + answer.status);
          this.show(await answer.json());
          this.root.dataset.state = 'live';
        } catch (err) {
          console.warn('autoscaling:', err);
          this.root.dataset.state = 'error';
        }
      }
      setTimeout(() => this.poll(), POLL_MS);
    }

    set(name, text) {
      const element = this.root.querySelector('[data-field="' + name + '"]');
      if (element) element.textContent = text;
      return element;
    }

    show(status) {
      const decision = status.last_decision;
      this.root.querySelector('[data-decision-none]').hidden = !!decision;
      this.root.querySelector('[data-decision]').hidden = !decision;
      if (decision) {
        this.set('mode', decision.mode).className = 'badge ' + (MODES[decision.mode] || 'badge-muted');
        this.set('desired', String(decision.desired));
        this.set('ready', String(decision.ready));
        this.set('stable', figure(decision.stable));
        this.set('panic', figure(decision.panic));
        this.set('reason', decision.reason);
        this.set('at', utcTime(decision.at));
      }
      this.root.querySelector('[data-autoscaling-blocked]').hidden = !status.blocked;
      this.set('blocked', status.blocked);
      this.draw(status.chart || [], status.policy.target);
    }

    draw(chart, target) {
      const xs = chart.map((p) => p[0]);
      const perReplica = chart.map((p) => (p[3] === null ? null : p[3] / Math.max(p[2], 1)));
      this.root.dataset.points = String(chart.length);
      this.root.querySelector('[data-autoscaling-charts]').hidden = !chart.length;
      this.root.querySelector('[data-autoscaling-empty]').hidden = chart.length > 0;
      if (!chart.length || !window.uPlot) return;
      const step = window.uPlot.paths.stepped ? window.uPlot.paths.stepped({align: 1}) : undefined;
      this.plot('replicas', [xs, chart.map((p) => p[1]), chart.map((p) => p[2])], [
        {label: 'desired', stroke: '#2563eb', width: 2, paths: step},
        {label: 'ready', stroke: '#16a34a', width: 1.5, paths: step},
      ], (u, min, max) => [0, Math.max(max, 1) + 1], [1, 2, 5, 10, 20, 50]);
      this.plot('signal', [xs, perReplica, xs.map(() => target)], [
        {label: 'per ready replica', stroke: '#9333ea', width: 1.5, spanGaps: true},
        {label: 'target', stroke: '#dc2626', width: 1.5, dash: [6, 4]},
      ], (u, min, max) => [0, Math.max(max, target) * 1.2]);
    }

    plot(name, data, series, range, incrs) {
      const element = this.root.querySelector('[data-autoscaling-chart="' + name + '"]');
      element.dataset.points = String(data[0].length);
      if (this.plots[name]) { this.plots[name].setData(data); return; }
      this.plots[name] = new window.uPlot({
        width: this.width(element),
        height: HEIGHT,
        legend: {show: true},
        scales: {x: {time: true}, y: {range: range}},
        series: [{}].concat(series.map((s) => ({points: {show: false}, ...s}))),
        axes: [{}, {size: 48, incrs: incrs}],
      }, data, element);
    }

    width(element) { return Math.max(200, element.clientWidth || 300); }

    resize() {
      for (const name of Object.keys(this.plots)) {
        const element = this.root.querySelector('[data-autoscaling-chart="' + name + '"]');
        this.plots[name].setSize({width: this.width(element), height: HEIGHT});
      }
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('[data-autoscaling-url]').forEach((root) => {
      if (!root.fleetAutoscaling) root.fleetAutoscaling = new AutoscalingCard(root);
    });
  });
})();
