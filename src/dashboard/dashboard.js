// keiko's dashboard: polls /metrics (Prometheus text 0.0.4) and /hits (JSON) once a second,
// same-origin, and draws rates and latency quantiles with uPlot plus a grid of image cards.
// Plain script, no build step; inlined into page.html by the server. Image names are untrusted:
// the DOM is built with createElement and textContent only.
(function () {
  "use strict";

  const PERIOD_MS = 1000; // one poll a second
  const TIMEOUT_MS = 5000; // a request taking longer counts as a failed poll
  const POINTS = 300; // five minutes of one-second points
  const CHART_HEIGHT = 200;
  const THUMB_RETRIES = 6; // a thumbnail that fails is retried after 2, 4, ... 64 s

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- Prometheus text format -------------------------------------------------------------

  function parseValue(s) {
    if (s === "+Inf" || s === "Inf") return Infinity;
    if (s === "-Inf") return -Infinity;
    if (s === "NaN") return NaN;
    if (s === "") return undefined;
    const v = Number(s);
    return Number.isNaN(v) ? undefined : v;
  }

  // Returns [{name, labels, value}] for every sample line; lines it cannot read are skipped.
  function parseMetrics(text) {
    const samples = [];
    const nameRe = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
    const labelRe = /^[a-zA-Z_][a-zA-Z0-9_]*/;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line[0] === "#") continue;
      const m = nameRe.exec(line);
      if (!m) continue;
      const name = m[0];
      const labels = {};
      let i = name.length;
      let ok = true;
      if (line[i] === "{") {
        i++;
        ok = false;
        while (i < line.length) {
          while (line[i] === " " || line[i] === ",") i++;
          if (line[i] === "}") { i++; ok = true; break; }
          const lm = labelRe.exec(line.slice(i));
          if (!lm) break;
          i += lm[0].length;
          while (line[i] === " ") i++;
          if (line[i] !== "=") break;
          i++;
          while (line[i] === " ") i++;
          if (line[i] !== '"') break;
          i++;
          let val = "";
          while (i < line.length && line[i] !== '"') {
            if (line[i] === "\\" && i + 1 < line.length) {
              const c = line[i + 1];
              val += c === "n" ? "\n" : c;
              i += 2;
            } else {
              val += line[i++];
            }
          }
          if (i >= line.length) break;
          i++; // closing quote
          labels[lm[0]] = val;
        }
      }
      if (!ok) continue;
      const value = parseValue(line.slice(i).trim().split(/\s+/)[0]);
      if (value === undefined) continue;
      samples.push({ name, labels, value });
    }
    return samples;
  }

  // The route labels of the write routes (uploads, deletes, content lookups).
  const WRITE_ROUTES = new Set(["upload", "delete", "lookup"]);

  // What one scrape says, in the shape the rate and quantile code wants.
  function snapshot(samples, now) {
    const s = {
      t: now,
      uptime: null,
      requests: new Map(), // route+status -> {status, value}
      buckets: new Map(), // route+le -> {le, value}
      open: null,
      queue: null,
      pending: null,
      loops: [], // [loop label, ratio]
    };
    for (const { name, labels, value } of samples) {
      switch (name) {
        case "keiko_requests_total":
          s.requests.set(JSON.stringify([labels.route, labels.status]), {
            status: Number(labels.status),
            value,
          });
          break;
        case "keiko_request_duration_seconds_bucket": {
          // The latency panels describe what clients read; a slow upload or delete (their own
          // route labels) must not move them.
          if (WRITE_ROUTES.has(labels.route)) break;
          const le = parseValue(labels.le === undefined ? "" : labels.le);
          if (le === undefined || Number.isNaN(le)) break;
          s.buckets.set(JSON.stringify([labels.route, le]), { le, value });
          break;
        }
        case "keiko_open_connections": s.open = value; break;
        case "keiko_render_queue_depth": s.queue = value; break;
        case "keiko_hits_pending": s.pending = value; break;
        case "keiko_uptime_seconds": s.uptime = value; break;
        case "keiko_loop_busy_ratio": s.loops.push([labels.loop === undefined ? "?" : labels.loop, value]); break;
      }
    }
    s.loops.sort((a, b) => (Number(a[0]) - Number(b[0])) || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return s;
  }

  // The increase of one counter series between scrapes. A series that went down was reset (keiko
  // restarted) and counts from zero again; a series that was not there before started at zero.
  function increase(cur, prev) {
    if (prev === undefined) return cur;
    return cur >= prev ? cur - prev : cur;
  }

  // Like Prometheus's histogram_quantile: buckets are [{le, count}] cumulative, sorted by le, the
  // last one +Inf. Linear interpolation inside the bucket the rank falls in; the largest finite
  // bound when it falls in +Inf; null with no observations.
  function histogramQuantile(q, buckets) {
    if (buckets.length < 2 || buckets[buckets.length - 1].le !== Infinity) return null;
    // Sums of per-route increases may dip after a reset; keep them monotonic as Prometheus does.
    for (let i = 1; i < buckets.length; i++) {
      if (buckets[i].count < buckets[i - 1].count) buckets[i].count = buckets[i - 1].count;
    }
    const total = buckets[buckets.length - 1].count;
    if (!(total > 0)) return null;
    let rank = q * total;
    let b = 0;
    while (b < buckets.length - 1 && buckets[b].count < rank) b++;
    if (b === buckets.length - 1) return buckets[buckets.length - 2].le;
    if (b === 0 && buckets[0].le <= 0) return buckets[0].le;
    let start = 0;
    let count = buckets[b].count;
    if (b > 0) {
      start = buckets[b - 1].le;
      count -= buckets[b - 1].count;
      rank -= buckets[b - 1].count;
    }
    return start + (buckets[b].le - start) * (rank / count);
  }

  // Rates and quantiles over the interval between two scrapes.
  function interval(prev, cur) {
    // Elapsed time: keiko's own clock when both scrapes carry it (no network jitter), the
    // browser's otherwise or across a restart.
    let dt = (cur.t - prev.t) / 1000;
    if (cur.uptime !== null && prev.uptime !== null && cur.uptime > prev.uptime) {
      dt = cur.uptime - prev.uptime;
    }
    if (!(dt > 0)) return null;

    let all = 0;
    let e5 = 0;
    let e4 = 0;
    for (const [key, r] of cur.requests) {
      const p = prev.requests.get(key);
      const d = increase(r.value, p && p.value);
      all += d;
      if (r.status >= 500) e5 += d;
      else if (r.status >= 400) e4 += d;
    }

    const byLe = new Map();
    for (const [key, b] of cur.buckets) {
      const p = prev.buckets.get(key);
      byLe.set(b.le, (byLe.get(b.le) || 0) + increase(b.value, p && p.value));
    }
    const buckets = Array.from(byLe, ([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
    const ms = (v) => (v === null ? null : v * 1000);
    return {
      requests: cur.requests.size ? all / dt : null,
      e5: cur.requests.size ? e5 / dt : null,
      e4: cur.requests.size ? e4 / dt : null,
      p50: ms(histogramQuantile(0.5, buckets.map((x) => ({ le: x.le, count: x.count })))),
      p99: ms(histogramQuantile(0.99, buckets)),
    };
  }

  // ---- Charts ----------------------------------------------------------------------------

  const series = { x: [], requests: [], p50: [], p99: [], e5: [], e4: [] };

  function push(x, r) {
    series.x.push(x);
    series.requests.push(r ? r.requests : null);
    series.p50.push(r ? r.p50 : null);
    series.p99.push(r ? r.p99 : null);
    series.e5.push(r ? r.e5 : null);
    series.e4.push(r ? r.e4 : null);
    if (series.x.length > POINTS) {
      for (const k in series) series[k].splice(0, series[k].length - POINTS);
    }
  }

  const fmt = (digits) => (u, v) => (v === null || v === undefined ? "–" : v.toFixed(digits));

  function line(label, stroke, digits) {
    return { label, stroke, width: 2, points: { show: false }, value: fmt(digits) };
  }

  const charts = [];

  function makeChart(container, lines, data) {
    const width = Math.max(200, container.clientWidth);
    const opts = {
      width,
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        {
          label: "time",
          value: (u, v) => (v === null || v === undefined ? "–" : new Date(v * 1000).toLocaleTimeString()),
        },
      ].concat(lines),
      axes: [{ stroke: "#5f6670" }, { stroke: "#5f6670", size: 56 }],
      cursor: { drag: { x: false, y: false } },
    };
    const chart = { container, data, u: new uPlot(opts, data(), container), width };
    charts.push(chart);
    return chart;
  }

  function initCharts() {
    if (typeof uPlot !== "function") return; // the page still works without charts
    makeChart($("chart-requests"), [line("req/s", "#2563eb", 1)], () => [series.x, series.requests]);
    makeChart(
      $("chart-latency"),
      [line("p50", "#059669", 2), line("p99", "#d97706", 2)],
      () => [series.x, series.p50, series.p99],
    );
    makeChart(
      $("chart-errors"),
      [line("5xx/s", "#b91c1c", 2), line("4xx/s", "#7c3aed", 2)],
      () => [series.x, series.e5, series.e4],
    );
    const resize = () => {
      for (const c of charts) {
        const w = Math.max(200, c.container.clientWidth);
        if (w !== c.width) {
          c.width = w;
          c.u.setSize({ width: w, height: CHART_HEIGHT });
        }
      }
    };
    if (typeof ResizeObserver === "function") {
      const ro = new ResizeObserver(resize);
      for (const c of charts) ro.observe(c.container);
    } else {
      window.addEventListener("resize", resize);
    }
  }

  // The latest point, as text beside each chart's title (the legend shows the hovered one).
  function drawNow(r) {
    const f = (v, digits) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits));
    setText($("now-requests"), r ? f(r.requests, 1) : "–");
    setText($("now-latency"), r ? "p50 " + f(r.p50, 2) + " · p99 " + f(r.p99, 2) : "–");
    setText($("now-errors"), r ? "5xx " + f(r.e5, 2) + " · 4xx " + f(r.e4, 2) : "–");
  }

  function drawCharts() {
    for (const c of charts) c.u.setData(c.data());
  }

  // ---- Tiles -----------------------------------------------------------------------------

  function number(v) {
    if (v === null || !Number.isFinite(v)) return "–";
    return Number.isInteger(v) ? String(v) : v.toFixed(2);
  }

  function duration(s) {
    if (s === null || !Number.isFinite(s) || s < 0) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    if (d > 0) return d + "d " + pad(h) + "h";
    if (h > 0) return h + "h " + pad(m) + "m";
    if (m > 0) return m + "m " + pad(s % 60) + "s";
    return s + "s";
  }

  function percent(ratio) {
    return Number.isFinite(ratio) ? Math.round(Math.min(1, Math.max(0, ratio)) * 100) + "%" : "–";
  }

  const loopRows = new Map(); // loop label -> {row, text, bar}

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function drawTiles(s) {
    setText($("tile-open"), number(s.open));
    setText($("tile-queue"), number(s.queue));
    setText($("tile-pending"), number(s.pending));
    setText($("tile-uptime"), duration(s.uptime));

    const box = $("tile-loops");
    if (s.loops.length === 0) {
      loopRows.clear();
      setText(box, "–");
      box.classList.remove("loops");
      return;
    }
    if (loopRows.size === 0) box.textContent = "";
    box.classList.add("loops");
    const seen = new Set();
    let ref = box.firstChild;
    for (const [loop, ratio] of s.loops) {
      seen.add(loop);
      let r = loopRows.get(loop);
      if (!r) {
        const row = el("span", "loop");
        row.title = "event loop " + loop;
        row.appendChild(el("span", "id", loop));
        const track = el("span", "bar");
        const bar = el("span");
        track.appendChild(bar);
        row.appendChild(track);
        const text = el("span", "pct");
        row.appendChild(text);
        r = { row, text, bar };
        loopRows.set(loop, r);
      }
      setText(r.text, percent(ratio));
      r.bar.style.width = Number.isFinite(ratio) ? Math.min(1, Math.max(0, ratio)) * 100 + "%" : "0";
      if (r.row === ref) ref = ref.nextSibling;
      else box.insertBefore(r.row, ref);
    }
    for (const [loop, r] of loopRows) {
      if (!seen.has(loop)) {
        r.row.remove();
        loopRows.delete(loop);
      }
    }
  }

  // ---- Image grid ------------------------------------------------------------------------

  const cards = new Map(); // image name -> {card, hits}

  function makeCard(name) {
    const card = el("div", "card");
    card.dataset.name = name;
    card.title = name;
    const thumb = el("div", "thumb");
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.width = 128;
    img.height = 128;
    img.alt = name;
    const url = "/dashboard/thumb/" + encodeURIComponent(name);
    let tries = 0;
    // The server answers 404 or 503 until the image is ready: hide the broken image, keep the
    // card, and try again a few times with backoff while the card is on the page.
    img.addEventListener("error", () => {
      thumb.classList.add("broken");
      if (tries >= THUMB_RETRIES) return;
      const wait = 2000 * 2 ** tries++;
      setTimeout(() => {
        if (img.isConnected) img.src = url;
      }, wait);
    });
    img.addEventListener("load", () => thumb.classList.remove("broken"));
    img.src = url;
    thumb.appendChild(img);
    card.appendChild(thumb);
    card.appendChild(el("div", "name", name));
    const hits = el("div", "hits");
    card.appendChild(hits);
    return { card, hits };
  }

  function drawGrid(hits) {
    const entries = [];
    let total = 0;
    for (const name of Object.keys(hits)) {
      const count = hits[name];
      if (typeof count !== "number" || !Number.isFinite(count)) continue;
      entries.push([name, count]);
      total += count;
    }
    entries.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

    const seen = new Set(entries.map((e) => e[0]));
    for (const [name, c] of cards) {
      if (!seen.has(name)) {
        c.card.remove();
        cards.delete(name);
      }
    }
    const grid = $("grid");
    let ref = grid.firstChild;
    for (const [name, count] of entries) {
      let c = cards.get(name);
      if (!c) {
        c = makeCard(name);
        cards.set(name, c);
      }
      setText(c.hits, String(count));
      // Move only the cards out of place; moved <img> elements keep their loaded image.
      if (c.card === ref) ref = ref.nextSibling;
      else grid.insertBefore(c.card, ref);
    }
    setText($("total-hits"), String(total));
    setText($("image-count"), String(entries.length));
    $("empty").hidden = entries.length > 0;
  }

  // ---- Polling ---------------------------------------------------------------------------

  async function get(path, as) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const res = await fetch(path, { cache: "no-store", signal: ctl.signal, credentials: "same-origin" });
      if (!res.ok) throw new Error(path + ": HTTP " + res.status);
      return as === "json" ? await res.json() : await res.text();
    } finally {
      clearTimeout(timer);
    }
  }

  let prev = null;
  let polls = 0;

  async function poll() {
    const [text, hits] = await Promise.all([get("/metrics", "text"), get("/hits", "json")]);
    if (hits === null || typeof hits !== "object" || Array.isArray(hits)) {
      throw new Error("/hits: not a JSON object");
    }
    const cur = snapshot(parseMetrics(text), performance.now());
    const last = prev;
    prev = cur;
    drawTiles(cur);
    drawGrid(hits);
    if (last) {
      const r = interval(last, cur);
      push(Date.now() / 1000, r);
      drawNow(r);
      try {
        drawCharts();
      } catch (err) {
        console.error("keiko dashboard: chart update failed", err);
      }
    }
  }

  function setStatus(ok, err) {
    $("banner").hidden = ok;
    if (!ok) $("banner").title = String((err && err.message) || err);
    setText($("status"), ok ? "updated " + new Date().toLocaleTimeString() : "disconnected");
  }

  async function loop() {
    const started = performance.now();
    try {
      await poll();
      polls++;
      document.body.dataset.polls = String(polls);
      setStatus(true);
    } catch (err) {
      setStatus(false, err);
    }
    const wait = Math.max(100, PERIOD_MS - (performance.now() - started));
    setTimeout(loop, wait);
  }

  function start() {
    $("host").textContent = location.host;
    document.title = "keiko · " + location.host;
    try {
      initCharts();
    } catch (err) {
      // Charts are an extra; the tiles and the grid still update.
      console.error("keiko dashboard: charts unavailable", err);
    }
    loop();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
