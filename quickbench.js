// quickbench.js: the original Keiko Corp quick benchmark: one ramp to 500 virtual users over 5 s,
// a new connection for every request, and the original thresholds.
//   k6 run quickbench.js                    (KEIKO_URL=http://host:8099 to aim elsewhere)
import { common, getImage, summarize } from './scripts/k6/keiko.js';

export const options = Object.assign({}, common, {
  scenarios: {
    quick: { executor: 'ramping-vus', startVUs: 0, stages: [{ duration: '5s', target: 500 }] },
  },
});

export default getImage;

export function handleSummary(data) {
  return summarize(data, 'quickbench');
}
