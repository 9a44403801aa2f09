(function () {
  const T = JSON.parse(document.getElementById('plotly-template').textContent);
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setup(script) {
    const spec = JSON.parse(script.textContent);
    const sec = script.parentElement;
    const div = sec.querySelector('.plot'), ctl = sec.querySelector('.controls');
    const note = sec.querySelector('.state-note');
    const data = spec.figure.data || [], layout = spec.figure.layout || {};
    layout.template = T;
    const state = spec.controls.map(c => c.initial || 0);
    let timer = null;
    const vis = () => spec.keys.map(k => !k || k.every((v, c) => v === null || v === state[c]));
    function seriesArgs(k) {
      const xs = [], ys = [], idx = [];
      for (const s of spec.series) {
        const j = Math.min(k, s.x.length - 1);
        if (s.mode === 'head') { xs.push([s.x[j]]); ys.push([s.y[j]]); }
        else { xs.push(s.x.slice(0, j + 1)); ys.push(s.y.slice(0, j + 1)); }
        idx.push(s.trace);
      }
      return [{x: xs, y: ys}, idx];
    }
    function update() {
      if (spec.keys) Plotly.restyle(div, {visible: vis()});
      if (spec.series) Plotly.restyle(div, ...seriesArgs(state[spec.series_control || 0]));
      spec.controls.forEach((c, i) => {
        if (c.axis_titles) Plotly.relayout(div, {'xaxis.title.text': c.axis_titles[state[i]][0],
                                                'yaxis.title.text': c.axis_titles[state[i]][1]});
      });
      if (spec.notes && note) note.textContent = spec.notes[state.join(',')] || '';
      div.dataset.state = state.join(',');
    }
    if (spec.keys) { const v = vis(); data.forEach((t, i) => { t.visible = v[i]; }); }
    if (spec.series) {
      const [a, idx] = seriesArgs(state[spec.series_control || 0]);
      idx.forEach((t, n) => { data[t].x = a.x[n]; data[t].y = a.y[n]; });
    }
    spec.controls.forEach((c, i) => {
      if (c.kind === 'hidden') return;
      const wrap = el('label', {'class': 'ctl'});
      wrap.append(c.name);
      if (c.kind === 'slider') {
        const n = c.labels.length;
        const inp = el('input', {type: 'range', min: 0, max: n - 1, step: 1,
                                 value: state[i], 'data-control': c.name});
        const val = el('span', {'class': 'val'}, c.labels[state[i]]);
        inp.addEventListener('input', () => {
          state[i] = +inp.value; val.textContent = c.labels[state[i]]; update();
        });
        wrap.append(inp, val);
        if (c.play) {
          const b = el('button', {type: 'button', 'class': 'play'}, '\u25B6 play');
          const stop = () => { clearInterval(timer); timer = null; b.textContent = '\u25B6 play'; };
          b.addEventListener('click', () => {
            if (timer) { stop(); return; }
            if (+inp.value >= n - 1) { inp.value = 0; inp.dispatchEvent(new Event('input')); }
            b.textContent = '\u275A\u275A pause';
            timer = setInterval(() => {
              if (+inp.value >= n - 1) { stop(); return; }
              inp.value = +inp.value + 1; inp.dispatchEvent(new Event('input'));
            }, Math.max(60, Math.min(400, 6000 / n)));
          });
          wrap.append(b);
        }
      } else {
        const sel = el('select', {'data-control': c.name});
        c.labels.forEach((l, j) => { const o = el('option', {value: j}, l); sel.append(o); });
        sel.value = state[i];
        sel.addEventListener('change', () => { state[i] = +sel.value; update(); });
        wrap.append(sel);
      }
      ctl.append(wrap);
    });
    Plotly.newPlot(div, data, layout, {responsive: true, displaylogo: false}).then(() => {
      if (spec.notes && note) note.textContent = spec.notes[state.join(',')] || '';
      div.dataset.state = state.join(',');
      div.dataset.ready = '1';
    });
  }
  function render(box) {
    box.querySelectorAll('script.fig-spec').forEach(s => {
      if (s.dataset.done) return;
      s.dataset.done = '1';
      try { setup(s); } catch (e) {
        s.parentElement.querySelector('.plot').textContent = 'not drawn: ' + e;
        console.error(e);
      }
    });
  }
  if (typeof Plotly === 'undefined') {   // offline without plotly.js: the PNGs instead
    const w = document.getElementById('no-plotly');
    if (w) w.hidden = false;
    const png = document.getElementById('png-fallback');
    if (png) png.hidden = false;
    document.getElementById('figures').hidden = true;
    document.querySelectorAll('details.lazy, details.static').forEach(d => { d.hidden = true; });
    return;
  }
  render(document.getElementById('figures'));
  document.querySelectorAll('details.lazy').forEach(d => d.addEventListener('toggle', () => {
    if (d.open) render(d);
  }));
})();
