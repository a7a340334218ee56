/*
 * jobs.js: live job progress for any page (no dependencies besides live.js; htmx optional).
 *
 * Markup: a container with [data-live-jobs] (and data-resync-url: where its HTML comes
 * from) holding elements rendered by core/_job_progress.html and core/_job_state.html
 * inside [data-job="<id>"] elements. data-live-groups="node.5 variant.7" on the container
 * subscribes to more groups (a node or model page showing its jobs).
 *
 * The socket (/ws/jobs/) always receives every job's transitions; progress arrives for the
 * groups subscribed here (job.<id> of each job shown as active). On a transition of a job
 * on the page (or a new job on the jobs list), and after a reconnect, the container is
 * re-rendered from the server (resync), then active jobs are subscribed again.
 */
(function () {
  'use strict';

  function human(bytes) {
    if (bytes === null || bytes === undefined) return '';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let value = Number(bytes), unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + ' ' + units[unit];
  }

  function summary(job) {
    const p = job.progress || {};
    if (job.state === 'succeeded') return '100%';
    if (!p.bytes_total && p.stage && job.state === 'running') {
      // benchmarks and test suites: a stage and a percentage instead of bytes
      let text = Math.round(p.percent || 0) + '% · ' + p.stage;
      if (p.eta_s !== null && p.eta_s !== undefined) text += ' · ETA ' + Math.round(p.eta_s) + ' s';
      return text;
    }
    if (!p.bytes_total) return job.state === 'queued' ? 'waiting' : '—';
    let text = Math.round(p.percent || 0) + '% · ' + human(p.bytes_done) + ' of ' + human(p.bytes_total);
    if (job.state === 'running' && p.rate_bps) {
      text += ' · ' + human(p.rate_bps) + '/s';
      if (p.eta_s !== null && p.eta_s !== undefined) text += ' · ETA ' + Math.round(p.eta_s) + ' s';
    }
    return text;
  }

  function apply(job) {
    document.querySelectorAll('[data-job-progress="' + job.id + '"]').forEach(function (el) {
      const p = job.progress || {};
      const bar = el.querySelector('[data-job-field="bar"]');
      if (bar) bar.style.width = (job.state === 'succeeded' ? 100 : Math.min(100, p.percent || 0)) + '%';
      const text = el.querySelector('[data-job-field="summary"]');
      if (text) text.textContent = summary(job);
      const file = el.querySelector('[data-job-field="file"]');
      if (file) file.textContent = job.state === 'running' ? (p.current_file || '') : '';
    });
    document.querySelectorAll('[data-job="' + job.id + '"] [data-job-field="state"]').forEach(function (el) {
      el.textContent = job.state;
    });
  }

  function start() {
    const containers = Array.from(document.querySelectorAll('[data-live-jobs]'));
    if (!containers.length || !window.FleetSocket) return;
    const subscribed = new Set();
    let timer = null;

    function subscribeAll(sock) {
      const groups = [];
      containers.forEach(function (c) {
        (c.dataset.liveGroups || '').split(/\s+/).forEach(function (g) { if (g) groups.push(g); });
        c.querySelectorAll('[data-job][data-job-active="1"]').forEach(function (row) {
          groups.push('job.' + row.dataset.job);
        });
      });
      groups.forEach(function (g) {
        if (!subscribed.has(g) && sock.send({ subscribe: g })) subscribed.add(g);
      });
    }

    function resync(sock) {
      clearTimeout(timer);
      timer = setTimeout(function () {
        containers.forEach(function (c) {
          // data-resync-url="" means "this page's current URL" (filters may have changed it)
          const url = c.dataset.resyncUrl || window.location.href;
          fetch(url, { headers: { 'HX-Request': 'true' }, credentials: 'same-origin' })
            .then(function (r) { return r.ok ? r.text() : null; })
            .then(function (html) {
              if (html === null) return;
              c.innerHTML = html;
              if (window.htmx) window.htmx.process(c);
              subscribeAll(sock);
            });
        });
      }, 250);
    }

    const sock = new FleetSocket('/ws/jobs/', {
      statusElement: document.getElementById('live-status'),
      onOpen: function (isReconnect) {
        subscribed.clear();
        subscribeAll(sock);
        if (isReconnect) resync(sock);
      },
      onMessage: function (msg) {
        if (msg.type !== 'job.update') return;
        const job = msg.payload;
        apply(job);
        if (!job.transition) return;
        // Re-render when a job on the page changed state, a job of a watched node or
        // variant appeared, or anything happened while showing the jobs list.
        const shown = document.querySelector('[data-job="' + job.id + '"]');
        const isList = containers.some(function (c) { return c.id === 'jobs-results'; });
        const target = (job.target_type || '').split('.').pop() + '.' + job.target_id;
        const watched = containers.some(function (c) {
          const groups = (c.dataset.liveGroups || '').split(/\s+/);
          return groups.indexOf('node.' + job.node) !== -1 || groups.indexOf(target) !== -1;
        });
        if (shown || isList || watched) resync(sock);
      },
    });
  }

  document.addEventListener('DOMContentLoaded', start);
})();
