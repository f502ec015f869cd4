// A light constant load for scripts/library-bench.sh: RATE requests per second of GET / for
// DURATION, each on a new connection; the summary keeps only p(99).
//   RATE=200 DURATION=15s KEIKO_URL=http://127.0.0.1:18350 k6 run --summary-export out.json scripts/k6/light.js
import http from 'k6/http';

const url = `${__ENV.KEIKO_URL}/`;

export const options = {
  noConnectionReuse: true,
  summaryTrendStats: ['p(99)'],
  scenarios: {
    light: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE),
      timeUnit: '1s',
      duration: __ENV.DURATION,
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
};

export default function () {
  http.get(url);
}
