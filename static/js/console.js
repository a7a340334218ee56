/*
 * console.js: page glue for the SLM Fleet console (no dependencies).
 *  - htmx requests carry Django's CSRF token as X-CSRFToken.
 *  - <form data-confirm="Really delete?"> asks before submitting.
 *  - <button data-copy-target="#id"> copies #id's text to the clipboard.
 * All listeners sit on document, so content swapped in by htmx works too.
 */
(function () {
  'use strict';

  // Cookie first (Django rotates it on login); the meta tag covers
  // CSRF_COOKIE_HTTPONLY setups where the cookie cannot be read.
  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') : '';
  }

  document.addEventListener('htmx:configRequest', function (event) {
    const token = csrfToken();
    if (token) event.detail.headers['X-CSRFToken'] = token;
  });

  // Capture phase, so this runs before htmx's own submit handler on the form
  // (hx-post forms) and can stop it when the user cancels.
  document.addEventListener('submit', function (event) {
    const form = event.target;
    if (form.matches && form.matches('form[data-confirm]') && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // navigator.clipboard exists only in secure contexts (https, localhost);
  // fall back to selecting the text and execCommand on plain-http installs.
  function copyText(text, source) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    const ok = document.execCommand('copy');
    selection.removeAllRanges();
    return ok ? Promise.resolve() : Promise.reject(new Error('copy failed'));
  }

  document.addEventListener('click', function (event) {
    const button = event.target.closest && event.target.closest('button[data-copy-target]');
    if (!button) return;
    event.preventDefault();  // a copy button inside a form must not submit it
    const source = document.querySelector(button.dataset.copyTarget);
    if (!source) return;
    // Remember the real label once, so quick repeated clicks do not lose it.
    if (!button.dataset.copyLabel) button.dataset.copyLabel = button.textContent;
    copyText(source.textContent.trim(), source).then(function () {
      button.textContent = 'Copied';
      clearTimeout(button._copyTimer);
      button._copyTimer = setTimeout(function () {
        button.textContent = button.dataset.copyLabel;
      }, 1500);
    }).catch(function (err) {
      console.error('copy failed', err);
    });
  });
})();
