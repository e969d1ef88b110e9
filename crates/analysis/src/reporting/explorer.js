// The explorer's behaviour (markup and data from explorer.rs): plain JavaScript, no libraries,
// nothing fetched, so report.html keeps working from a file on a machine without a network.
(function () {
  'use strict';
  var root = document.getElementById('explorer');
  // Installed before anything else can fail, so a test that only reads the DOM sees failures.
  window.addEventListener('error', function (event) {
    reportError(event.message || String(event.error));
  });
  window.addEventListener('unhandledrejection', function (event) {
    reportError('unhandled rejection: ' + event.reason);
  });

  var SIZE = 480; // the scatter's side in CSS pixels
  var PAD = 10;
  var GRID = 9999; // explorer.rs stores coordinates on 0..=GRID
  var HIT_RADIUS = 8;
  var ZOOM = 3;
  var LEGEND_MAX = 30;
  // The static plots' colours (plot.rs), so the explorer and the PNGs agree.
  var PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
    '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  var NOISE = '#c8c8c8';
  var MISSING = '#e0e0e0';
  var VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];

  var data, ui, pixels;
  var state = { layer: 0, sample: 0, colourBy: 'label', points: [], hovered: null };

  function reportError(message) {
    if (root && !root.hasAttribute('data-error')) root.setAttribute('data-error', message);
  }

  function el(selector) {
    return root.querySelector(selector);
  }

  function textDiv(text) {
    var div = document.createElement('div');
    div.textContent = text;
    return div;
  }

  function formatNumber(v) {
    return typeof v === 'number' && isFinite(v) ? String(+v.toPrecision(4)) : 'n/a';
  }

  function decodeBase64(text) {
    var raw = atob(text);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  // explorer.rs stores a view's coordinates as base64 of little-endian u16 grid positions
  // (65535: none) and leaves out indices that are 0..n; unpacked here into plain arrays.
  function unpackViews(views) {
    views.forEach(function (row) {
      (row || []).forEach(function (view) {
        if (!view) return;
        if (typeof view.coords === 'string') {
          var bytes = decodeBase64(view.coords);
          var coords = new Array(bytes.length / 2);
          for (var i = 0; i < coords.length; i++) {
            var g = bytes[2 * i] | (bytes[2 * i + 1] << 8);
            coords[i] = g === 65535 ? null : g;
          }
          view.coords = coords;
        }
        if (!view.indices) {
          view.indices = [];
          for (var k = 0; k < view.coords.length / 2; k++) view.indices.push(k);
        }
      });
    });
  }

  function className(label) {
    var names = data.class_names;
    if (label === null || label === undefined) return 'n/a';
    return names && label >= 0 && label < names.length ? names[label] : String(label);
  }

  function currentView() {
    var row = data.views[state.layer];
    return (row && row[state.sample]) || null;
  }

  function findElements() {
    return {
      layer: el('.ex-layer'), sample: el('.ex-sample'), sampleLabel: el('.ex-sample-label'),
      canvas: el('.ex-scatter'), empty: el('.ex-empty'), tooltip: el('.ex-tooltip'),
      probe: el('.ex-probe'), tipText: el('.ex-tip-text'), legend: el('.ex-legend'),
      heatmaps: el('.ex-heatmaps')
    };
  }

  // ---- controls ----

  function setUpLayerSelect() {
    data.layers.forEach(function (name, i) {
      var option = document.createElement('option');
      option.value = i;
      option.textContent = name;
      ui.layer.appendChild(option);
    });
    ui.layer.addEventListener('change', function () {
      select(+ui.layer.value, state.sample);
    });
  }

  function setUpSlider() {
    ui.sample.max = Math.max(0, data.samples.length - 1);
    ui.sample.addEventListener('input', function () {
      select(state.layer, +ui.sample.value);
    });
  }

  function setUpColourToggle() {
    root.querySelectorAll('input[name="explorer-colour"]').forEach(function (radio) {
      // A reload may restore the other choice; follow what the reader sees.
      if (radio.checked) state.colourBy = radio.value;
      radio.addEventListener('change', function () {
        state.colourBy = radio.value;
        drawScatter();
      });
    });
  }

  function select(layer, sample) {
    state.layer = layer;
    state.sample = sample;
    ui.layer.value = layer;
    ui.sample.value = sample;
    showSampleLabel();
    hideTooltip();
    drawScatter();
    markSelectedCells();
  }

  function showSampleLabel() {
    var s = data.samples[state.sample];
    ui.sampleLabel.textContent = s ? s.label + sampleDetail(s) : 'no samples';
  }

  // What the label does not say already: an epoch sample's step, a step sample's epoch
  // (`epoch` counts the epochs completed, so a step sample lies in the next one).
  function sampleDetail(s) {
    if (s.step === 0) return ' (before training)';
    if (s.label.indexOf('step') === 0) return ' (in epoch ' + formatNumber(s.epoch + 1) + ')';
    return ' (step ' + s.step + ')';
  }

  // ---- scatter ----

  function setUpCanvas() {
    var ratio = window.devicePixelRatio || 1;
    ui.canvas.width = SIZE * ratio;
    ui.canvas.height = SIZE * ratio;
    ui.canvas.style.width = SIZE + 'px';
    ui.canvas.style.height = SIZE + 'px';
    ui.ctx = ui.canvas.getContext('2d');
    ui.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ui.canvas.addEventListener('mousemove', onHover);
    ui.canvas.addEventListener('mouseleave', hideTooltip);
  }

  function drawScatter() {
    var view = currentView();
    ui.ctx.clearRect(0, 0, SIZE, SIZE);
    state.points = view ? project(view) : [];
    ui.empty.hidden = !!view;
    if (!view) ui.empty.textContent = 'No embedding for ' + layerName() + ' at ' + sampleName() + '.';
    drawPoints(state.points);
    drawLegend(view);
  }

  function layerName() {
    return data.layers[state.layer] || 'this layer';
  }

  function sampleName() {
    var s = data.samples[state.sample];
    return s ? s.label : 'this sample';
  }

  function project(view) {
    var points = [];
    var span = SIZE - 2 * PAD;
    for (var i = 0; i < view.indices.length; i++) {
      var gx = view.coords[2 * i];
      var gy = view.coords[2 * i + 1];
      if (gx === null || gy === null || gx === undefined || gy === undefined) continue;
      points.push({
        i: i, x: PAD + gx / GRID * span, y: PAD + (1 - gy / GRID) * span,
        colour: pointColour(view, i)
      });
    }
    return points;
  }

  function pointColour(view, i) {
    var id = state.colourBy === 'cluster' ? view.clusters[i] : data.labels[view.indices[i]];
    return categoryColour(id);
  }

  function categoryColour(id) {
    if (typeof id !== 'number' || !isFinite(id) || id < 0) return NOISE;
    return PALETTE[id % PALETTE.length];
  }

  // Noise first, so that the clusters stay visible on top of it.
  function drawPoints(points) {
    var radius = points.length > 3000 ? 1.5 : 2.5;
    ui.ctx.globalAlpha = 0.85;
    points.forEach(function (p) { if (p.colour === NOISE) drawPoint(p, radius); });
    points.forEach(function (p) { if (p.colour !== NOISE) drawPoint(p, radius); });
    ui.ctx.globalAlpha = 1;
  }

  function drawPoint(p, radius) {
    ui.ctx.fillStyle = p.colour;
    ui.ctx.beginPath();
    ui.ctx.arc(p.x, p.y, radius, 0, 2 * Math.PI);
    ui.ctx.fill();
  }

  // ---- legend ----

  function drawLegend(view) {
    ui.legend.textContent = '';
    if (!view) return;
    var ids = legendIds(view);
    ids.slice(0, LEGEND_MAX).forEach(function (id) {
      ui.legend.appendChild(legendEntry(id));
    });
    if (ids.length > LEGEND_MAX) {
      ui.legend.appendChild(textDiv('\u2026 ' + (ids.length - LEGEND_MAX) + ' more'));
    }
  }

  // The ids present in the view, ascending, noise last.
  function legendIds(view) {
    var seen = {};
    view.indices.forEach(function (probe, i) {
      seen[state.colourBy === 'cluster' ? view.clusters[i] : data.labels[probe]] = true;
    });
    return Object.keys(seen).map(Number).filter(isFinite).sort(function (a, b) {
      return (a < 0) - (b < 0) || a - b;
    });
  }

  function legendEntry(id) {
    var row = document.createElement('div');
    var swatch = document.createElement('span');
    swatch.className = 'ex-swatch';
    swatch.style.background = categoryColour(id);
    row.appendChild(swatch);
    row.appendChild(document.createTextNode(legendName(id)));
    return row;
  }

  function legendName(id) {
    if (state.colourBy === 'cluster') return id < 0 ? 'noise' : 'cluster ' + id;
    return className(id);
  }

  // ---- hover tooltip ----

  function onHover(event) {
    var p = nearestPoint(canvasPosition(event));
    if (p) showTooltip(p);
    else hideTooltip();
  }

  function canvasPosition(event) {
    var rect = ui.canvas.getBoundingClientRect();
    return {
      x: (event.clientX - rect.left) * SIZE / rect.width,
      y: (event.clientY - rect.top) * SIZE / rect.height
    };
  }

  // Strictly nearer only, so of coinciding points the first (drawn below) is named.
  function nearestPoint(at) {
    var best = null;
    var bestDistance = HIT_RADIUS * HIT_RADIUS + 1e-9;
    state.points.forEach(function (p) {
      var d = (p.x - at.x) * (p.x - at.x) + (p.y - at.y) * (p.y - at.y);
      if (d < bestDistance) {
        best = p;
        bestDistance = d;
      }
    });
    return best;
  }

  function showTooltip(p) {
    var view = currentView();
    var probe = view.indices[p.i];
    state.hovered = p;
    drawProbe(probe);
    ui.tipText.textContent = '';
    tooltipLines(view, p.i, probe).forEach(function (line) {
      ui.tipText.appendChild(textDiv(line));
    });
    ui.tooltip.hidden = false;
    placeTooltip(p);
  }

  function hideTooltip() {
    state.hovered = null;
    ui.tooltip.hidden = true;
  }

  function tooltipLines(view, i, probe) {
    var label = data.labels[probe];
    var prediction = view.predictions[i];
    var cluster = view.clusters[i];
    var verdict = prediction === label ? ' \u2713' : ' \u2717';
    return [
      'probe #' + probe,
      'label: ' + className(label),
      'prediction: ' + (prediction === undefined ? 'n/a' : className(prediction) + verdict),
      'cluster: ' + (cluster === undefined ? 'n/a' : cluster < 0 ? 'noise' : cluster)
    ];
  }

  // Beside the point, flipped to its other side where it would leave the scatter.
  function placeTooltip(p) {
    var scale = ui.canvas.getBoundingClientRect().width / SIZE || 1;
    var side = SIZE * scale;
    var x = p.x * scale + 12;
    var y = p.y * scale + 12;
    if (x + ui.tooltip.offsetWidth > side) x = Math.max(0, x - 24 - ui.tooltip.offsetWidth);
    if (y + ui.tooltip.offsetHeight > side) y = Math.max(0, y - 24 - ui.tooltip.offsetHeight);
    ui.tooltip.style.left = x + 'px';
    ui.tooltip.style.top = y + 'px';
  }

  // ---- probe images ----

  // Resolves once the probe images are decoded (explorer.rs sends them as one grey PNG, a row
  // per image); hovering before then shows no image.
  function setUpProbeCanvas() {
    var img = data.images;
    if (!img) {
      ui.probe.style.display = 'none';
      return Promise.resolve();
    }
    ui.small = document.createElement('canvas');
    ui.small.width = img.width;
    ui.small.height = img.height;
    ui.probe.width = img.width * ZOOM;
    ui.probe.height = img.height * ZOOM;
    return decodeGreyPng(img.png).then(function (bytes) {
      pixels = bytes;
    });
  }

  function decodeGreyPng(text) {
    return new Promise(function (resolve, reject) {
      var image = new Image();
      image.onload = function () {
        var canvas = document.createElement('canvas');
        canvas.width = image.width;
        canvas.height = image.height;
        var ctx = canvas.getContext('2d');
        ctx.drawImage(image, 0, 0);
        var rgba = ctx.getImageData(0, 0, image.width, image.height).data;
        var bytes = new Uint8Array(image.width * image.height);
        for (var i = 0; i < bytes.length; i++) bytes[i] = rgba[4 * i];
        resolve(bytes);
      };
      image.onerror = function () {
        reject(new Error('the probe images did not decode'));
      };
      image.src = 'data:image/png;base64,' + text;
    });
  }

  function drawProbe(probe) {
    if (!pixels) return;
    ui.small.getContext('2d').putImageData(probeImageData(data.images, probe), 0, 0);
    var ctx = ui.probe.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(ui.small, 0, 0, ui.probe.width, ui.probe.height);
  }

  // One probe's [C, H, W] planes as RGBA; a single plane is grey.
  function probeImageData(img, probe) {
    var plane = img.width * img.height;
    var base = probe * img.channels * plane;
    var out = new ImageData(img.width, img.height);
    for (var k = 0; k < plane; k++) {
      for (var c = 0; c < 3; c++) {
        out.data[4 * k + c] = pixels[base + (img.channels === 3 ? c * plane : 0) + k] || 0;
      }
      out.data[4 * k + 3] = 255;
    }
    return out;
  }

  // ---- heatmaps ----

  function buildHeatmaps() {
    data.heatmaps.forEach(function (figure) {
      ui.heatmaps.appendChild(heatmapTable(figure));
    });
    ui.heatmaps.addEventListener('click', onCellClick);
  }

  function onCellClick(event) {
    var cell = event.target.closest('td[data-layer]');
    if (cell) select(+cell.dataset.layer, +cell.dataset.sample);
  }

  function heatmapTable(figure) {
    var table = document.createElement('table');
    var range = valueRange(figure);
    var body = document.createElement('tbody');
    table.className = 'ex-heat';
    table.appendChild(heatmapCaption(figure.name, range));
    table.appendChild(heatmapHead());
    data.layers.forEach(function (layer, l) {
      body.appendChild(heatmapRow(figure, range, l));
    });
    table.appendChild(body);
    return table;
  }

  function heatmapCaption(name, range) {
    var caption = document.createElement('caption');
    var note = document.createElement('span');
    var bar = document.createElement('span');
    caption.textContent = name + ' ';
    note.className = 'ex-range';
    bar.className = 'ex-bar';
    bar.style.background = 'linear-gradient(to right, ' + VIRIDIS.map(rgb).join(', ') + ')';
    note.append(formatNumber(range[0]), bar, formatNumber(range[1]));
    caption.appendChild(note);
    return caption;
  }

  function heatmapHead() {
    var head = document.createElement('thead');
    var row = head.insertRow();
    row.appendChild(document.createElement('th'));
    data.samples.forEach(function (s) {
      var th = document.createElement('th');
      th.textContent = s.label;
      row.appendChild(th);
    });
    return head;
  }

  function heatmapRow(figure, range, l) {
    var row = document.createElement('tr');
    var head = document.createElement('th');
    head.textContent = data.layers[l];
    row.appendChild(head);
    data.samples.forEach(function (s, k) {
      row.appendChild(heatmapCell(figure, range, l, k));
    });
    return row;
  }

  function heatmapCell(figure, range, l, k) {
    var cell = document.createElement('td');
    var value = cellValue(figure, l, k);
    cell.dataset.layer = l;
    cell.dataset.sample = k;
    cell.style.background = value === null ? MISSING : viridis(normalise(value, range));
    cell.title = figure.name + ' \u00b7 ' + data.layers[l] + ' \u00b7 ' + data.samples[k].label +
      ': ' + (value === null ? 'not measured' : formatNumber(value));
    return cell;
  }

  function cellValue(figure, l, k) {
    var row = figure.values[l];
    var v = row ? row[k] : null;
    return typeof v === 'number' && isFinite(v) ? v : null;
  }

  function valueRange(figure) {
    if (figure.range) return figure.range;
    var lo = Infinity;
    var hi = -Infinity;
    figure.values.forEach(function (row, l) {
      row.forEach(function (v, k) {
        var value = cellValue(figure, l, k);
        if (value !== null) {
          lo = Math.min(lo, value);
          hi = Math.max(hi, value);
        }
      });
    });
    return lo <= hi ? [lo, hi] : [0, 1];
  }

  // A flat figure sits mid-scale rather than dividing by zero.
  function normalise(value, range) {
    return range[1] > range[0] ? (value - range[0]) / (range[1] - range[0]) : 0.5;
  }

  // plot.rs's viridis: linear between nine samples of matplotlib's map.
  function viridis(t) {
    t = isFinite(t) ? Math.min(1, Math.max(0, t)) : 0;
    var pos = t * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(pos), VIRIDIS.length - 2);
    var f = pos - i;
    var a = VIRIDIS[i];
    var b = VIRIDIS[i + 1];
    return rgb([0, 1, 2].map(function (c) { return Math.round(a[c] + (b[c] - a[c]) * f); }));
  }

  function rgb(c) {
    return 'rgb(' + c[0] + ', ' + c[1] + ', ' + c[2] + ')';
  }

  function markSelectedCells() {
    root.querySelectorAll('.ex-heat td.ex-sel').forEach(function (cell) {
      cell.classList.remove('ex-sel');
    });
    var selector = 'td[data-layer="' + state.layer + '"][data-sample="' + state.sample + '"]';
    ui.heatmaps.querySelectorAll(selector).forEach(function (cell) {
      cell.classList.add('ex-sel');
    });
  }

  // ---- self-test (URL hash #test): real events, checked, then data-tested ----

  function selfTest() {
    testHover();
    testClick();
    root.setAttribute('data-tested', 'hover,click');
  }

  function check(ok, message) {
    if (!ok) throw new Error('self-test: ' + message);
  }

  function testHover() {
    if (!currentView()) selectFirstView();
    var p = state.points[0];
    check(p, 'hover: no embedded point to hover');
    var rect = ui.canvas.getBoundingClientRect();
    var scale = rect.width / SIZE;
    ui.canvas.dispatchEvent(new MouseEvent('mousemove', {
      bubbles: true, clientX: rect.left + p.x * scale, clientY: rect.top + p.y * scale
    }));
    check(!ui.tooltip.hidden && state.hovered, 'hover: the tooltip stayed hidden');
    var probe = currentView().indices[state.hovered.i];
    check(ui.tipText.textContent.indexOf('probe #' + probe) >= 0, 'hover: the tooltip names no probe');
    check(!data.images || probeDrawn(), 'hover: the probe image was not drawn');
  }

  function probeDrawn() {
    return ui.probe.getContext('2d').getImageData(0, 0, 1, 1).data[3] === 255;
  }

  function selectFirstView() {
    for (var l = 0; l < data.views.length; l++) {
      var row = data.views[l] || [];
      for (var k = 0; k < row.length; k++) {
        if (row[k]) return select(l, k);
      }
    }
  }

  function testClick() {
    var cell = ui.heatmaps.querySelector('td[data-layer]');
    check(cell, 'click: no heatmap cell');
    cell.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    var layer = +cell.dataset.layer;
    var sample = +cell.dataset.sample;
    check(state.layer === layer && state.sample === sample, 'click: the selection did not follow');
    check(+ui.layer.value === layer && +ui.sample.value === sample, 'click: the controls did not follow');
    check(cell.classList.contains('ex-sel'), 'click: the cell is not marked');
    check(ui.empty.hidden === !!currentView(), 'click: the no-embedding note disagrees');
  }

  function init() {
    data = JSON.parse(el('#explorer-data').textContent);
    unpackViews(data.views);
    ui = findElements();
    setUpCanvas();
    var probesReady = setUpProbeCanvas();
    setUpLayerSelect();
    setUpSlider();
    setUpColourToggle();
    buildHeatmaps();
    // The trained network first: the last sample, the first layer.
    select(0, Math.max(0, data.samples.length - 1));
    root.setAttribute('data-ready', 'true');
    probesReady
      .then(function () {
        if (location.hash === '#test') selfTest();
      })
      .catch(function (e) {
        reportError(String(e && e.message || e));
      });
  }

  if (root) init();
})();
