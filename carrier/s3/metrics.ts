/**
 * The gateway's Prometheus metrics, in the node's registry (docs/node.md, "Metrics"): requests
 * by operation and HTTP status, object bytes in and out, and latency by operation. A sink like
 * carrier/metrics.ts: the server reports each finished request through `request`; every label set
 * the code can produce starts at 0, so that `increase()` sees the first error.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { OPERATION_NAMES } from './routes.js';

/** The statuses the gateway answers; 499: the client went away before the answer was sent (nginx's code). */
const STATUSES = ['200', '204', '206', '304', '400', '403', '404', '409', '412', '416', '499', '500', '501', '503'];

export class S3Metrics {
  readonly #requests: Counter<'operation' | 'status'>;
  readonly #bytes: Counter<'direction'>;
  readonly #seconds: Histogram<'operation'>;
  /** Running totals for the status page (prom-client counters are read asynchronously). */
  readonly totals = { requests: 0, errors: 0, bytesIn: 0, bytesOut: 0 };

  constructor(registry: Registry) {
    const registers = [registry];
    this.#requests = new Counter({ name: 'ouro_s3_requests_total', help: 'S3 gateway requests answered, by operation (`NotImplemented`, or `unknown` before the request was authenticated) and HTTP status', labelNames: ['operation', 'status'], registers });
    this.#bytes = new Counter({ name: 'ouro_s3_bytes_total', help: 'S3 gateway payload bytes: in (request bodies as authenticated), out (object bytes sent)', labelNames: ['direction'], registers });
    this.#seconds = new Histogram({ name: 'ouro_s3_request_seconds', help: 'S3 gateway request duration, until the answer is sent (a streamed object included)', labelNames: ['operation'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60], registers });
    for (const operation of [...OPERATION_NAMES, 'unknown']) {
      this.#seconds.zero({ operation });
      for (const status of STATUSES) this.#requests.inc({ operation, status }, 0);
    }
    for (const direction of ['in', 'out']) this.#bytes.inc({ direction }, 0);
  }

  request(operation: string, status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    this.#requests.inc({ operation, status: String(status) });
    this.#seconds.observe({ operation }, seconds);
    if (bytesIn > 0) this.#bytes.inc({ direction: 'in' }, bytesIn);
    if (bytesOut > 0) this.#bytes.inc({ direction: 'out' }, bytesOut);
    this.totals.requests++;
    if (status >= 400) this.totals.errors++;
    this.totals.bytesIn += bytesIn;
    this.totals.bytesOut += bytesOut;
  }
}
