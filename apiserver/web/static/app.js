// nlpswarm backoffice: the only two things that need JavaScript, the upload
// progress bar and the live refresh. Every page works without it.
(function () {
  'use strict';

  function human(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
  }

  // Upload with a progress bar: the same multipart form, sent by
  // XMLHttpRequest so that upload progress (bytes and rate) can be shown.
  document.querySelectorAll('form[data-upload]').forEach(function (form) {
    form.addEventListener('submit', function (ev) {
      if (!window.XMLHttpRequest || !window.FormData) { return; }
      ev.preventDefault();
      var box = form.querySelector('.upload-status');
      var bar = form.querySelector('progress');
      var text = form.querySelector('.upload-text');
      var errBox = form.querySelector('#upload-error');
      var button = form.querySelector('button[type=submit]');
      var started = Date.now();
      box.hidden = false;
      errBox.textContent = '';
      button.disabled = true;
      var xhr = new XMLHttpRequest();
      xhr.upload.addEventListener('progress', function (e) {
        if (!e.lengthComputable) { return; }
        bar.max = e.total;
        bar.value = e.loaded;
        var secs = (Date.now() - started) / 1000;
        var rate = secs > 0 ? e.loaded / secs : 0;
        text.textContent = human(e.loaded) + ' of ' + human(e.total) + ' sent, ' + human(rate) + '/s';
        if (e.loaded >= e.total) { text.textContent += '; the server is validating the archive…'; }
      });
      xhr.addEventListener('load', function () {
        if (xhr.status < 400) {
          window.location.assign(xhr.responseURL || form.action);
          return;
        }
        var doc = new DOMParser().parseFromString(xhr.responseText, 'text/html');
        var alert = doc.querySelector('[role=alert]');
        if (alert) {
          errBox.appendChild(document.importNode(alert, true));
        } else {
          errBox.textContent = 'The upload failed (HTTP ' + xhr.status + ').';
          errBox.setAttribute('role', 'alert');
        }
        text.textContent = 'Upload refused.';
        button.disabled = false;
      });
      xhr.addEventListener('error', function () {
        errBox.textContent = 'The connection broke during the upload.';
        errBox.setAttribute('role', 'alert');
        button.disabled = false;
      });
      xhr.open('POST', form.action);
      xhr.send(new FormData(form));
    });
  });

  // Live refresh: the element marked data-refresh is fetched again every few
  // seconds, unless keyboard focus is inside it (replacing it would lose it).
  var live = document.querySelector('[data-refresh]');
  var every = live ? parseInt(live.getAttribute('data-refresh'), 10) : 0;
  if (live && live.id && every > 0 && window.fetch && window.DOMParser) {
    setInterval(function () {
      var a = document.activeElement;
      if (a && a !== live && live.contains(a)) { return; }
      fetch(window.location.pathname, { credentials: 'same-origin', redirect: 'error' })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById(live.id);
          if (!fresh) { return; }
          live.innerHTML = fresh.innerHTML;
        })
        .catch(function () { /* keep what is shown; the next tick tries again */ });
    }, every * 1000);
  }
})();
