// bench.js: the original Keiko Corp benchmark: three ramping scenarios (basic to 40 virtual users,
// high_load to 200, spike to 5,000), a new connection for every request, the original thresholds.
//   k6 run bench.js                         (KEIKO_URL=http://host:8099 to aim elsewhere)
import { common, getImage, summarize } from './scripts/k6/keiko.js';

export const options = Object.assign({}, common, {
  scenarios: {
    basic: { executor: 'ramping-vus', startVUs: 0, stages: [{ duration: '10s', target: 40 }] },
    high_load: { executor: 'ramping-vus', startTime: '11s', startVUs: 0, stages: [{ duration: '10s', target: 200 }] },
    spike: { executor: 'ramping-vus', startTime: '22s', startVUs: 0, stages: [{ duration: '10s', target: 5000 }] },
  },
});

export default getImage;

export function handleSummary(data) {
  return summarize(data, 'bench');
}
