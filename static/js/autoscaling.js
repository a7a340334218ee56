/*
 * autoscaling.js: the deployment page's autoscaling card (templates/deployments/_autoscaling.html).
 *
 * Polls GET /api/v1/deployments/<id>/autoscaling/ every 2 s (session auth) and draws, with the
 * vendored uPlot, desired vs ready replicas over the last 15 minutes, and the signal next to
 * its target line. Until there are points, one short message ("No samples yet") instead.
 */
(function () {
  'use strict';

  function size(el) {
    return { width: Math.max(260, el.parentElement.clientWidth - 8), height: 180 };
  }

  function draw(card, status) {
    const points = status.chart || [];
    const decision = status.last_decision;
    const text = card.querySelector('[data-autoscaling-decision]');
    if (decision && text) {
      text.textContent = decision.mode + ': ' + decision.reason + ' → ' + decision.desired +
        ' wanted, ' + decision.ready + ' ready';
    }
    const blocked = card.querySelector('[data-autoscaling-blocked]');
    if (blocked) {
      blocked.hidden = !status.blocked;
      blocked.textContent = 'New replicas wait for a node: ' + status.blocked;
    }
    if (!points.length || !window.uPlot) return;
    card.querySelector('[data-autoscaling-empty]').hidden = true;
    const t = points.map((p) => p[0]);
    const counts = [t, points.map((p) => p[1]), points.map((p) => p[2])];
    const target = status.policy.target;
    const signal = [t, points.map((p) => p[3]), points.map(() => target)];
    for (const [name, data, series] of [
      ['chart', counts, [{ label: 'desired', stroke: '#2563eb', width: 2 },
                         { label: 'ready', stroke: '#16a34a', width: 2 }]],
      ['signal', signal, [{ label: status.policy.metric, stroke: '#9333ea' },
                          { label: 'target per replica', stroke: '#dc2626', dash: [6, 4] }]],
    ]) {
      const el = card.querySelector('[data-autoscaling-' + name + ']');
      el.hidden = false;
      el.dataset.points = String(t.length);
      if (el._plot) {
        el._plot.setData(data);
      } else {
        el._plot = new window.uPlot(
          { ...size(el), series: [{}, ...series], scales: { x: { time: true } } }, data, el);
      }
    }
  }

  function start(card) {
    const url = card.dataset.autoscalingUrl;
    const poll = () => {
      fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then((answer) => (answer.ok ? answer.json() : null))
        .then((status) => { if (status) draw(card, status); })
        .catch(() => {})
        .finally(() => setTimeout(poll, 2000));
    };
    poll();
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('[data-autoscaling-url]').forEach(start);
  });
})();
