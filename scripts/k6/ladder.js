// One rung of scripts/ladder.sh: a constant arrival rate of RATE requests per second for DURATION,
// a new connection for every request (as in the original scenarios), the same checks as bench.js.
//   RATE=2000 DURATION=10s KEIKO_URL=http://127.0.0.1:8099 KEIKO_SUMMARY=out.json k6 run scripts/k6/ladder.js
import { common, getImage, summarize } from './keiko.js';

const rate = parseInt(__ENV.RATE || '1000', 10);

export const options = Object.assign({}, common, {
  thresholds: {},
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
  scenarios: {
    rung: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '10s',
      preAllocatedVUs: Math.min(Math.max(Math.ceil(rate / 10), 50), 2000),
      maxVUs: Math.min(Math.max(rate, 100), 5000),
    },
  },
});

export default getImage;

export function handleSummary(data) {
  return summarize(data, `ladder-${rate}`);
}
