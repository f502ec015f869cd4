// What bench.js and quickbench.js share: the original Keiko Corp request and thresholds, the
// checks that keep a fast wrong answer from passing, and an end-of-test summary (text on stdout,
// the full JSON next to it) that needs no module from the network.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

export const BASE_URL = __ENV.KEIKO_URL || 'http://localhost:8099';

// 200 responses that really were a non-empty WebP image: scripts/bench.sh compares this count
// with the hits in the database.
const imagesServed = new Counter('images_served');

export const common = {
  noConnectionReuse: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(90)<100', 'p(95)<200', 'p(99)<500'],
  },
};

export function getImage() {
  // 'binary' keeps the body as bytes: cheaper for k6 than decoding 200 KB into a string.
  const res = http.get(`${BASE_URL}/`, { responseType: 'binary' });
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'content-type is image/webp': (r) => r.headers['Content-Type'] === 'image/webp',
    'body is not empty': (r) => r.body !== null && r.body.byteLength > 0,
  });
  if (ok) imagesServed.add(1);
}

function ms(v) {
  return v === undefined ? '-' : `${v.toFixed(2)}ms`;
}

function textSummary(data, name) {
  const m = data.metrics;
  const d = m.http_req_duration ? m.http_req_duration.values : {};
  const reqs = m.http_reqs ? m.http_reqs.values : { count: 0, rate: 0 };
  const lines = [
    '',
    `${name} against ${BASE_URL}`,
    `  http_reqs.........: ${reqs.count} (${reqs.rate.toFixed(1)}/s)`,
    `  images_served.....: ${m.images_served ? m.images_served.values.count : 0}`,
    `  http_req_duration.: avg=${ms(d.avg)} med=${ms(d.med)} p(90)=${ms(d['p(90)'])} ` +
      `p(95)=${ms(d['p(95)'])} p(99)=${ms(d['p(99)'])} max=${ms(d.max)}`,
    `  http_req_failed...: ${((m.http_req_failed ? m.http_req_failed.values.rate : 0) * 100).toFixed(2)}%`,
    `  checks............: ${((m.checks ? m.checks.values.rate : 0) * 100).toFixed(2)}% passed`,
    '  thresholds:',
  ];
  for (const [metric, info] of Object.entries(m)) {
    for (const [expr, t] of Object.entries(info.thresholds || {})) {
      lines.push(`    ${t.ok ? 'ok    ' : 'FAILED'} ${metric} ${expr}`);
    }
  }
  return lines.join('\n') + '\n';
}

// The text summary on stdout, the full JSON in KEIKO_SUMMARY (default <name>-summary.json).
export function summarize(data, name) {
  const out = { stdout: textSummary(data, name) };
  out[__ENV.KEIKO_SUMMARY || `${name}-summary.json`] = JSON.stringify(data, null, 1);
  return out;
}
