(function () {
  const tbody = document.querySelector('#runs tbody');
  const rows = Array.from(tbody.rows);
  const fe = document.getElementById('f-experiment'), fs = document.getElementById('f-status');
  const count = document.getElementById('count');
  function filter() {
    let n = 0;
    for (const r of rows) {
      const ok = (!fe.value || r.dataset.experiment === fe.value) &&
                 (!fs.value || r.dataset.status === fs.value);
      r.hidden = !ok; n += ok;
    }
    count.textContent = n + ' of ' + rows.length + ' runs shown';
  }
  fe.addEventListener('change', filter); fs.addEventListener('change', filter);
  document.querySelectorAll('#runs th').forEach((th, i) => th.addEventListener('click', () => {
    const asc = th.dataset.dir !== 'asc';
    document.querySelectorAll('#runs th').forEach(h => { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    const key = r => r.cells[i].dataset.sort ?? r.cells[i].textContent;
    rows.sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(r => tbody.append(r));
  }));
  filter();
})();
