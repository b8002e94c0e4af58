/**
 * A node's configuration: one JSON file per node, `<dir>/ouro-node.json` (docs/node.md lists
 * every field), with command-line flags laid over it. Validation is strict: an unknown field, a
 * wrong type or an impossible combination fails with ConfigError naming the field, before the
 * node touches anything. The file is read once at start; a node never reloads it (a change on
 * disk is logged as needing a restart).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, ioError } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';

export const CONFIG_FILE = 'ouro-node.json';
export const CONFIG_VERSION = 1;

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
export const isLoopback = (host: string) => LOOPBACK.has(host) || host.startsWith('127.');

const ms = (min: number) => z.number().int().min(min).max(24 * 3600_000);

export const DEFAULT_REPLICATION = { factor: 3, maxUnsealedMs: 5000, deadGraceMs: 60_000, repairIntervalMs: 10_000, repairBytesPerSec: 64 * 1024 * 1024, repairThreshold: 1 };
export const DEFAULT_PROOFS = { enabled: true, intervalMs: 30_000, perRound: 4, deadlineMs: 5000, stock: 8, quarantineAfter: 3, quarantineWindowMs: 24 * 3600_000 };
export const DEFAULT_LEDGER = { intervalMs: 60_000, syncIntervalMs: 5000 };
export const DEFAULT_SERIES = { sampleMs: 2000, keepMs: 15 * 60_000 };
/** Circuit relay among members (carrier/relay.ts): off; its limits off too (only members use it). */
export const DEFAULT_RELAY = { serve: false, via: [] as string[], maxReservations: 64, durationLimitMs: 0, dataLimitBytes: 0 };
/** The S3 gateway (docs/s3.md): off unless enabled; 3900 is Garage's S3 port, which clients set up for it know. */
export const DEFAULT_S3 = { enabled: false, host: '127.0.0.1', port: 3900, region: 'us-east-1' };

/**
 * A node's name, for people (the status page, `/members`): 1 to 64 characters, none of them
 * control characters. Not an identity: two nodes may share one, and the peer id stays the key.
 */
export const isNodeName = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= 64 && !/[\p{Cc}]/u.test(v);

const schema = z
  .strictObject({
    version: z.literal(CONFIG_VERSION),
    /** This node's name, carried to the other members in its heartbeats (see isNodeName). */
    name: z
      .string()
      .refine(isNodeName, 'must be 1 to 64 characters, no control characters')
      .nullable()
      .default(null),
    /** QUIC multiaddrs to listen on. */
    listen: z.array(z.string().regex(/^\/ip[46]\/[^/]+\/udp\/\d+\/quic-v1$/, 'a QUIC multiaddr such as /ip4/0.0.0.0/udp/4100/quic-v1')).min(1),
    /**
     * The addresses this node announces to the other members instead of those it listens on
     * (empty: those). A wildcard listen address announces every interface's, loopback included,
     * and an address behind a port forward is not one this node has: name the ones members dial.
     */
    announce: z.array(z.string().regex(/^\/ip[46]\/[^/]+\/udp\/[1-9]\d*\/quic-v1(\/p2p\/[^/]+\/p2p-circuit)?$/, 'a QUIC multiaddr with a port, such as /ip4/203.0.113.7/udp/4100/quic-v1, or a relay\'s with /p2p/<relay id>/p2p-circuit')).default([]),
    /** Circuit relay among members, for members behind NAT (carrier/relay.ts; docs/operations.md, "Members behind NAT"). */
    relay: z
      .strictObject({
        /** Serve the relay to members (only members may reserve a slot or be relayed). */
        serve: z.boolean(),
        /**
         * This node is behind NAT: it reserves a slot on these relays (members' QUIC multiaddrs
         * ending in /p2p/<relay id>) and, where `announce` is empty, announces `<relay>/p2p-circuit`.
         */
        via: z.array(z.string().regex(/^\/ip[46]\/[^/]+\/udp\/[1-9]\d*\/quic-v1\/p2p\/[^/]+$/, 'a relay member\'s QUIC multiaddr with its peer id, such as /ip4/203.0.113.7/udp/4100/quic-v1/p2p/12D3KooW...')),
        /** Slots a serving relay holds at once. */
        maxReservations: z.number().int().min(1).max(4096),
        /** A relayed connection is closed after this long; 0: no limit (members only use the relay). */
        durationLimitMs: z.number().int().min(0).max(2 ** 31 - 1),
        /** ...or once this many bytes crossed it; 0: no limit. Below the largest block, block transfers through it fail. */
        dataLimitBytes: z.number().int().min(0),
      })
      .default(() => ({ ...DEFAULT_RELAY, via: [] })),
    admin: z.strictObject({
      host: z.string().min(1),
      port: z.number().int().min(0).max(65535),
      /** The admin API's admin token; null: the stable one in admin-tokens.json (carrier/admin-tokens.ts). */
      token: z.string().min(16, 'at least 16 characters').nullable(),
    }),
    heartbeat: z.strictObject({
      intervalMs: ms(50),
      suspectAfterMs: ms(100),
      deadAfterMs: ms(200),
    }),
    maxFrameBytes: z.number().int().min(1024).max(64 * 1024 * 1024),
    requestTimeoutMs: ms(100),
    log: z.strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']) }),
    replication: z
      .strictObject({
        /** Members each sealed block is placed on (capped by the cluster's size); every member must use the same. */
        factor: z.number().int().min(1).max(16),
        /** The node's database seals an open block once its oldest entry is this old. */
        maxUnsealedMs: ms(10),
        /** A dead member keeps its placements this long before its blocks are copied elsewhere. */
        deadGraceMs: ms(0),
        /** Pause between repair passes. */
        repairIntervalMs: ms(100),
        /** Bytes per second repair may send. */
        repairBytesPerSec: z.number().int().min(64 * 1024),
        /** At ec K+M: repair a coded block once its healthy shards fall to K + this many (docs/node.md, "Redundancy"). */
        repairThreshold: z.number().int().min(0).max(255).default(DEFAULT_REPLICATION.repairThreshold),
      })
      .default(() => ({ ...DEFAULT_REPLICATION })),
    proofs: z
      .strictObject({
        /** Challenge the holders of the blocks this node's database sealed. */
        enabled: z.boolean(),
        /** Pause between challenge rounds. */
        intervalMs: ms(50),
        /** Challenges per round (each one block at one holder). */
        perRound: z.number().int().min(1).max(1024),
        /** A correct answer later than this is `late`. */
        deadlineMs: ms(10),
        /** Challenges precomputed per block (at seal time, and again when used up). */
        stock: z.number().int().min(1).max(256),
        /** Failed or late proofs within quarantineWindowMs that quarantine a member; the same on every member. */
        quarantineAfter: z.number().int().min(1).max(64),
        quarantineWindowMs: ms(1),
      })
      .default(() => ({ ...DEFAULT_PROOFS })),
    ledger: z
      .strictObject({
        /** This node records its uptime, holding and served events this often. */
        intervalMs: ms(100),
        /** It copies the other members' ledger events this often. */
        syncIntervalMs: ms(50),
      })
      .default(() => ({ ...DEFAULT_LEDGER })),
    series: z
      .strictObject({
        /** The status page's figures are sampled this often... */
        sampleMs: ms(100),
        /** ...and kept this long. */
        keepMs: ms(1000),
      })
      .default(() => ({ ...DEFAULT_SERIES })),
    s3: z
      .strictObject({
        /** Serve the S3 API (needs the database). */
        enabled: z.boolean(),
        host: z.string().min(1),
        /** 0: any free port (the address is in node.run.json as `s3`). */
        port: z.number().int().min(0).max(65535),
        /** The region clients sign for (their credential scope must name it). */
        region: z.string().regex(/^[a-z0-9-]{1,32}$/, 'a region name such as us-east-1'),
        /** A write answers only once this many members hold it (db.flush({replicas})); unset: once durable here. */
        replicas: z.number().int().min(1).max(16).optional(),
      })
      .default(() => ({ ...DEFAULT_S3 })),
    database: z.strictObject({
      /** Open the embedded database in `path` (relative to the node directory) with the node. */
      enabled: z.boolean(),
      path: z.string().min(1),
    }),
  })
  .superRefine((c, ctx) => {
    if (c.heartbeat.suspectAfterMs <= c.heartbeat.intervalMs) ctx.addIssue({ code: 'custom', path: ['heartbeat', 'suspectAfterMs'], message: 'must be longer than heartbeat.intervalMs' });
    if (c.heartbeat.deadAfterMs <= c.heartbeat.suspectAfterMs) ctx.addIssue({ code: 'custom', path: ['heartbeat', 'deadAfterMs'], message: 'must be longer than heartbeat.suspectAfterMs' });
  });

export type NodeConfig = z.infer<typeof schema>;

/** A partial config, as flags or a caller give it: any field may be left out. */
export type NodeConfigPatch = { [K in keyof NodeConfig]?: NodeConfig[K] extends unknown[] ? NodeConfig[K] : NodeConfig[K] extends object ? Partial<NodeConfig[K]> : NodeConfig[K] };

export const DEFAULT_CONFIG: NodeConfig = {
  version: CONFIG_VERSION,
  name: null,
  listen: ['/ip4/127.0.0.1/udp/0/quic-v1'],
  announce: [],
  relay: { ...DEFAULT_RELAY, via: [] },
  admin: { host: '127.0.0.1', port: 0, token: null },
  heartbeat: { intervalMs: 1000, suspectAfterMs: 3000, deadAfterMs: 10_000 },
  maxFrameBytes: 4 * 1024 * 1024,
  requestTimeoutMs: 10_000,
  log: { level: 'info' },
  replication: { ...DEFAULT_REPLICATION },
  proofs: { ...DEFAULT_PROOFS },
  ledger: { ...DEFAULT_LEDGER },
  series: { ...DEFAULT_SERIES },
  s3: { ...DEFAULT_S3 },
  database: { enabled: false, path: 'db' },
};

/** Lays `patch` over `base` one level deep (the config's sections), then validates. */
export function resolveConfig(base: unknown, patch: NodeConfigPatch = {}, source = 'config'): NodeConfig {
  const merged: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    // A section the file lacks (written by an older release) starts from its default.
    const b = merged[k] ?? (DEFAULT_CONFIG as Record<string, unknown>)[k];
    merged[k] = v !== null && typeof v === 'object' && !Array.isArray(v) && b !== null && typeof b === 'object' && !Array.isArray(b) ? { ...b, ...v } : v;
  }
  const parsed = schema.safeParse(merged);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.join('.') || '(root)';
  throw new ConfigError(`${source}: ${field} ${issue.message.replace(/^Invalid input: /, '')}`, field);
}

/** Reads `<dir>/ouro-node.json` (defaults where the file is missing) and applies `patch`. */
export async function loadConfig(dir: string, patch: NodeConfigPatch = {}): Promise<NodeConfig> {
  const file = path.join(dir, CONFIG_FILE);
  let base: unknown = DEFAULT_CONFIG;
  try {
    const text = await fs.readFile(file, 'utf8');
    try {
      base = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`${file} is not valid JSON: ${(err as Error).message}`, '(file)', { cause: err });
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(`reading ${file}`, err);
  }
  return resolveConfig(base, patch, file);
}

/** Writes a validated config to `<dir>/ouro-node.json`. */
export async function saveConfig(dir: string, config: NodeConfig): Promise<void> {
  const valid = resolveConfig(config);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(nodeVfs, path.join(dir, CONFIG_FILE), JSON.stringify(valid, null, 2) + '\n');
}
