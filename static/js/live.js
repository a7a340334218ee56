/*
 * live.js: small WebSocket client for the SLM Fleet console (no dependencies).
 *
 *   const sock = new FleetSocket('/ws/fleet/', {
 *     onMessage(data) { ... },          // each message, already JSON-parsed
 *     onOpen(isReconnect) { ... },      // false on the first connect, true after
 *     onClose(event) { ... },           // every close, including the final one
 *     statusElement: document.querySelector('.live-dot'),
 *   });
 *   sock.send({type: 'ping'});          // JSON-encoded; false if not connected
 *   sock.close();                       // stop for good (no reconnect)
 *
 * Resync on reconnect: the server does not replay events that were sent while
 * this client was disconnected. Pages must therefore treat onOpen(true) as
 * "state may be stale": fetch the REST snapshot again and re-render from it,
 * then keep applying live messages on top. (The page was rendered from a fresh
 * snapshot, so onOpen(false) usually needs nothing.)
 *
 * Reconnects use exponential backoff with full jitter (random delay between 0
 * and min(30 s, 500 ms * 2^attempt)); the attempt counter resets only after a
 * connection has stayed open for 10 s, so a server that accepts and then drops
 * us at once is not hammered. Close codes 4401/4403 (unauthenticated/forbidden)
 * stop reconnecting for good: retrying cannot help until the user signs in.
 *
 * FleetSocket.timeAgo(element): see below.
 */
(function () {
  'use strict';

  const BASE_DELAY_MS = 500, MAX_DELAY_MS = 30000, STABLE_AFTER_MS = 10000;
  const FINAL_CLOSE_CODES = [4401, 4403];  // unauthenticated, forbidden

  class FleetSocket {
    constructor(path, options) {
      this.path = path;
      this.options = options || {};
      this.statusElement = this.options.statusElement || null;
      this.ws = null;
      this.attempt = 0;            // consecutive failed/short-lived connections
      this.hasConnected = false;   // distinguishes first open from reconnects
      this.stopped = false;        // set by close() or a 4401/4403 close
      this._retryTimer = this._stableTimer = null;

      // Background tabs may have their timers throttled for minutes; when the
      // user comes back, reconnect right away rather than wait out the backoff.
      this._onVisibility = () => {
        if (document.visibilityState === 'visible' && !this.stopped && !this.isConnected()) {
          this._connect();
        }
      };
      document.addEventListener('visibilitychange', this._onVisibility);
      this._connect();
    }

    get url() {
      const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      return scheme + '//' + window.location.host + this.path;
    }

    /** True while a socket is open or still connecting. */
    isConnected() {
      return !!this.ws && this.ws.readyState <= WebSocket.OPEN;  // CONNECTING=0, OPEN=1
    }

    /** Send obj as JSON. Returns false (and drops it) when not open. */
    send(obj) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(obj));
      return true;
    }

    /** Close for good: no further reconnects. */
    close() {
      this.stopped = true;
      this._clearTimers();
      document.removeEventListener('visibilitychange', this._onVisibility);
      if (this.ws) this.ws.close(1000, 'client closed');
      this._setStatus(false, 'closed');
    }

    _connect() {
      this._clearTimers();
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {  // e.g. blocked by CSP; treat like a failed connect
        this._scheduleReconnect();
        return;
      }
      this.ws = ws;
      this._setStatus(false, 'connecting');

      ws.onopen = () => {
        const isReconnect = this.hasConnected;
        this.hasConnected = true;
        this._setStatus(true, 'live');
        this._stableTimer = setTimeout(() => { this.attempt = 0; }, STABLE_AFTER_MS);
        this._call('onOpen', isReconnect);
      };

      ws.onmessage = (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch (err) {
          console.warn('FleetSocket: ignoring non-JSON message', event.data);
          return;
        }
        this._call('onMessage', data);
      };

      // No onerror handler: an error is always followed by a close event.
      ws.onclose = (event) => {
        // A socket replaced by a newer one (visibility reconnect) is ignored.
        if (this.ws !== ws) return;
        this.ws = null;
        clearTimeout(this._stableTimer);
        if (FINAL_CLOSE_CODES.indexOf(event.code) !== -1) {
          this.stopped = true;
          this._setStatus(false, 'signed out');
        } else if (this.stopped) {
          this._setStatus(false, 'closed');
        } else {
          this._scheduleReconnect();
        }
        this._call('onClose', event);
      };
    }

    _scheduleReconnect() {
      // Full jitter: spreads reconnects of many tabs after a server restart.
      const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * Math.pow(2, this.attempt));
      const delay = Math.floor(Math.random() * ceiling);
      this.attempt += 1;
      this._setStatus(false, 'disconnected, retrying in ' + Math.ceil(delay / 1000) + ' s');
      this._retryTimer = setTimeout(() => this._connect(), delay);
    }

    _clearTimers() {
      clearTimeout(this._retryTimer);
      clearTimeout(this._stableTimer);
    }

    _setStatus(connected, text) {
      const el = this.statusElement;
      if (!el) return;
      el.classList.add('live-dot');
      el.classList.toggle('connected', connected);
      el.classList.toggle('disconnected', !connected);
      el.title = text;
      el.setAttribute('aria-label', text);
    }

    // Call a user callback without letting its exceptions break the socket.
    _call(name, arg) {
      const fn = this.options[name];
      if (typeof fn !== 'function') return;
      try { fn.call(this, arg); } catch (err) {
        console.error('FleetSocket ' + name + ' handler failed', err);
      }
    }
  }

  function formatAgo(seconds) {
    if (seconds < 60) return seconds + ' s ago';
    if (seconds < 3600) return Math.floor(seconds / 60) + ' min ago';
    if (seconds < 86400) return Math.floor(seconds / 3600) + ' h ago';
    return Math.floor(seconds / 86400) + ' d ago';
  }

  /**
   * Every second, rewrite each [data-timestamp] inside element (default:
   * document) as relative time. Elements added later (e.g. by htmx swaps) are
   * picked up on the next tick. Returns a function that stops the updates.
   */
  FleetSocket.timeAgo = function (element) {
    const root = element || document;
    const tick = () => {
      const now = Date.now();
      root.querySelectorAll('[data-timestamp]').forEach((el) => {
        const t = Date.parse(el.getAttribute('data-timestamp'));
        if (isNaN(t)) return;
        // Clamp: a slightly fast server clock must not show negative ages.
        el.textContent = formatAgo(Math.max(0, Math.floor((now - t) / 1000)));
        if (!el.title) el.title = new Date(t).toLocaleString();
      });
    };
    tick();
    const id = setInterval(tick, 1000);
    return () => clearInterval(id);
  };

  FleetSocket.formatAgo = formatAgo;
  window.FleetSocket = FleetSocket;
})();
