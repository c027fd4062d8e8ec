// The replaced stack's load test, against ragd: 50 virtual users searching with distinct queries,
// about 4.5 requests per second each, with a JWT (or an API key), and the seed's thresholds.
//
//   k6 run -e RAGD_URL=http://127.0.0.1:8080 -e RAGD_TOKEN=<JWT or API key> \
//          -e QUERIES=../shared/datasets/msmarco-5k/queries.jsonl -e COLLECTION=msmarco deploy/k6/seed.js
//
// RAGD_TOKEN is sent as `Authorization: Bearer`; leave it out when authentication is off. `ragd bench
// search --vus 50 --pace 222ms ...` runs the same scenario without k6 (and corrects for
// coordinated omission, which k6 does not).
import http from "k6/http";
import { check, sleep } from "k6";
import { SharedArray } from "k6/data";

const BASE = __ENV.RAGD_URL || "http://127.0.0.1:8080";
const COLLECTION = __ENV.COLLECTION || "msmarco";
const TOKEN = __ENV.RAGD_TOKEN || "";

const queries = new SharedArray("queries", () => {
  if (!__ENV.QUERIES) return ["how do I rotate keys", "what is the refund policy", "where are backups stored"];
  return open(__ENV.QUERIES)
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => (__ENV.QUERIES.endsWith(".jsonl") ? JSON.parse(l).text : l.trim()));
});

export const options = {
  scenarios: {
    seed: {
      executor: "constant-vus",
      vus: 50,
      duration: __ENV.DURATION || "60s",
    },
  },
  thresholds: {
    // The seed stack reported p50 1.2 ms and p95 6.77 ms at 50 virtual users.
    http_req_duration: ["p(95)<6.77", "p(50)<1.2"],
    http_req_failed: ["rate<0.001"],
    checks: ["rate>0.999"],
  },
};

export default function () {
  // Each iteration takes the next query: distinct queries across users and iterations.
  const q = queries[(__VU * 7919 + __ITER) % queries.length];
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const res = http.post(`${BASE}/api/v1/collections/${COLLECTION}/search`, JSON.stringify({ query: q, top_k: 10 }), {
    headers,
    tags: { name: "search" },
  });
  check(res, {
    "status 200": (r) => r.status === 200,
    "has results": (r) => Array.isArray(r.json("results")),
  });
  // ~4.5 requests/s per user: 222 ms per iteration minus the request's own time.
  sleep(Math.max(0, 0.222 - res.timings.duration / 1000));
}
