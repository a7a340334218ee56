/*
 * deployments.js: live deployment pages over /ws/deployments/ (FleetSocket from live.js).
 *
 * Elements with data-live-deployment="<id>" (detail page) or data-live-deployments (list
 * page) are htmx regions whose hx-trigger listens for "live-refresh". A message about a
 * watched deployment triggers that event (htmx debounces it with "delay:"), so the server
 * renders the region again: the page never applies partial state itself. A reconnect
 * refreshes every region (messages sent while disconnected are not replayed).
 */
(function () {
  'use strict';

  function regions() {
    return Array.prototype.slice.call(
      document.querySelectorAll('[data-live-deployment], [data-live-deployments]'));
  }

  function refresh(region) {
    if (window.htmx) window.htmx.trigger(region, 'live-refresh');
  }

  function start() {
    const watched = regions();
    if (!watched.length || !window.FleetSocket) return;
    const sock = new FleetSocket('/ws/deployments/', {
      statusElement: document.getElementById('live-status'),
      onOpen: function (isReconnect) {
        watched.forEach(function (region) {
          const id = region.dataset.liveDeployment;
          if (id) sock.send({subscribe: 'deployment.' + id});
          if (isReconnect) refresh(region);
        });
      },
      onMessage: function (msg) {
        const payload = msg.payload || {};
        watched.forEach(function (region) {
          const id = region.dataset.liveDeployment;
          if (id === undefined) {
            if (msg.type === 'deployments.changed') refresh(region);
          } else if (msg.type.indexOf('deployment.') === 0 &&
                     String(payload.deployment || payload.id) === id) {
            refresh(region);
          }
        });
      },
    });
  }

  document.addEventListener('DOMContentLoaded', start);
})();
