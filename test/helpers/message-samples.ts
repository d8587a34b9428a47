import type { TSchema } from '@sinclair/typebox'
import {
  AgentToRelay, RelayToAgent, RelayToServer, ServerToRelay, ServerStreams, RelayStreams, AgentStreams, DEFAULT_SETTINGS
} from '../../protocol/messages.js'
import type { MessageSet } from '../../protocol/schema.js'

export type MessageSetLike = MessageSet<TSchema>
export type Sample = Record<string, unknown>

/** One valid message of every kind of every direction; tests derive the bad ones from these. */
export function messageSamples (): { sha: string, jobResult: Sample, good: Record<string, { set: MessageSetLike, samples: Sample[] }> } {
  const sha = 'ab'.repeat(32)
  const mac = 'bWFjbWFjbWFjbWFjbWFjbWFjbWFjbWFjbWFjbWFjbWE'
  const jobResult = { jobId: 'jabc', attempt: 2, state: 'failed', exitCode: 3, error: { code: 'RG_ERR_EXEC_FAILED', message: 'exited with 3' }, output: 'oops', bytes: 10, mac }

  const good: Record<string, { set: MessageSetLike, samples: Array<Record<string, unknown>> }> = {
    'agent -> relay': {
      set: AgentToRelay,
      samples: [
        { t: 'proof', proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' },
        { t: 'job-result', ...jobResult },
        { t: 'tunnel-open', tunnelId: 'tAbC_-1', proof: 'cHJvb2Y', mac },
        { t: 'tunnel-closed', tunnelId: 'tAbC', reason: 'idle', mac },
        { t: 'tunnel-need', mac },
        { t: 'snapshot', reason: 'connect', takenAt: 1764892800000, snapshot: { hostname: 'h', load: [1, 2, 3] }, mac },
        { t: 'job-progress', jobId: 'jabc', attempt: 1, state: 'downloading', progress: 0.5, bytes: 1024, mac },
        { t: 'order-refused', kind: 'job', ref: 'jabc', code: 'RG_ERR_ORDER_FORGED', message: 'does not verify', mac },
        { t: 'update-progress', updateId: 'uabc', version: '0.3.2', state: 'downloading', progress: 0.25, bytes: 1024, running: '0.3.1', mac }
      ]
    },
    'relay -> agent': {
      set: RelayToAgent,
      samples: [
        { t: 'challenge', nonce: 'bm9uY2U', relayId: 'rabc' },
        { t: 'welcome', endpointId: 'eabc', relayId: 'rabc', intervalSeconds: 5, downloadToken: 'dG9rZW4' },
        { t: 'job-result-ack', jobId: 'jabc', attempt: 1 },
        { t: 'job-result-nack', jobId: 'jabc', attempt: 1, code: 'RG_ERR_DISK_FULL', message: 'relay disk full', retryInSeconds: 5 },
        { t: 'tunnel-offer', tunnelId: 'tAbC', blob: 'YmxvYg', target: 'http://127.0.0.1:2375', idleTimeoutSeconds: 300, n: 1, mac },
        { t: 'tunnel-result', tunnelId: 'tAbC', ok: false, code: 'RG_ERR_AUTH', message: 'wrong proof', n: 2, mac },
        { t: 'tunnel-keepalive', tunnelId: 'tAbC', n: 3, mac },
        { t: 'tunnel-close', tunnelId: 'tAbC', reason: 'closed by the admin', n: 4, mac },
        { t: 'job', jobId: 'jabc', attempt: 1, sha256: sha, size: 100, path: 'a/b.tgz', run: ['sh', '-c', 'true'], deadline: 1764892800000, n: 5, mac },
        { t: 'agent-settings', snapshotIntervalSeconds: 600, n: 6, mac },
        { t: 'stop', code: 'RG_ERR_ENDPOINT_DELETED', message: 'deleted', n: 7, mac },
        { t: 'update', updateId: 'uabc', version: '0.3.2', sha256: sha, size: 111_000_000, healthSeconds: 120, deadline: 1764892800000, n: 8, mac }
      ]
    },
    'relay -> server': {
      set: RelayToServer,
      samples: [
        { t: 'auth-begin', sid: 1, endpointId: 'eabc', edgeId: '0b6f5b1e-4c1e-4d3a-9d7e-0a1b2c3d4e5f' },
        { t: 'auth-proof', sid: 1, proof: 'cHJvb2Y', agentNonce: 'bm9uY2U' },
        { t: 'offline', sids: [1, 2, 3] },
        { t: 'stats', agents: 3, queuedResults: 0, cache: { hits: 1, misses: 2, bytesServed: 3, bytesFetched: 4, entries: 5, bytesUsed: 6, maxBytes: 7, fillsInProgress: 0, corruptDropped: 0, hashedServes: 0 } },
        { t: 'job-result', key: 'jabc_eabc_2', endpointId: 'eabc', edgeId: 'e-1', jobId: 'jabc', attempt: 2, result: jobResult },
        { t: 'result-held', endpointId: 'eabc', jobId: 'jabc', attempt: 2, code: 'RG_ERR_DISK_FULL', message: 'the relay could not store this result' },
        { t: 'tunnel-open', sid: 4, tunnelId: 'tAbC', proof: 'cHJvb2Y', mac },
        { t: 'tunnel-closed', sid: 4, tunnelId: 'tAbC', reason: 'idle', mac },
        { t: 'tunnel-need', sid: 4, mac },
        { t: 'snapshot', sid: 4, reason: 'interval', takenAt: 1, snapshot: {}, mac },
        { t: 'job-progress', sid: 4, jobId: 'jabc', attempt: 1, state: 'running', progress: 1, bytes: 0, mac },
        { t: 'order-refused', sid: 4, kind: 'tunnel-offer', ref: 'tAbC', code: 'RG_ERR_ORDER_REPLAYED', message: 'seen', mac },
        { t: 'update-progress', sid: 4, updateId: 'uabc', version: '0.3.2', state: 'failed', progress: 1, bytes: 0, running: '0.3.1', code: 'RG_ERR_UPDATE_ROLLED_BACK', message: 'back on 0.3.1', mac },
        { t: 'relay-update-progress', updateId: 'uabc', version: '0.3.2', state: 'succeeded', progress: 1, bytes: 0, running: '0.3.2' }
      ]
    },
    'server -> relay': {
      set: ServerToRelay,
      samples: [
        { t: 'auth-challenge', sid: 1, nonce: 'bm9uY2U' },
        { t: 'auth-result', sid: 1, ok: true, flags: 1 },
        { t: 'flags', set: [['eabc', 1], ['edef', 0]] },
        { t: 'settings', settings: DEFAULT_SETTINGS },
        { t: 'kick', endpointId: 'eabc', code: 'RG_ERR_ENDPOINT_DELETED', message: 'endpoint deleted' },
        { t: 'prestage', sha256: sha },
        { t: 'job-result-ack', key: 'jabc_eabc_2' },
        { t: 'installers', files: [{ name: 'relaygate-linux-x64', sha256: sha, size: 111_000_000 }] },
        { t: 'tunnel-offer', sid: 2, tunnelId: 'tAbC', blob: 'YmxvYg', target: null, idleTimeoutSeconds: 30, n: 1, mac },
        { t: 'tunnel-result', sid: 2, tunnelId: 'tAbC', ok: true, n: 2, mac },
        { t: 'tunnel-keepalive', sid: 2, tunnelId: 'tAbC', n: 3, mac },
        { t: 'tunnel-close', sid: 2, tunnelId: 'tAbC', reason: 'bye', n: 4, mac },
        { t: 'job', sid: 2, jobId: 'jabc', attempt: 1, sha256: sha, size: 0, path: 'x', run: null, deadline: 1764892800000, n: 5, mac },
        { t: 'agent-settings', sid: 2, snapshotIntervalSeconds: 60, n: 6, mac },
        { t: 'stop', sid: 2, code: 'RG_ERR_ENDPOINT_DELETED', message: 'deleted', n: 7, mac },
        { t: 'update', sid: 2, updateId: 'uabc', version: '0.3.2', sha256: sha, size: 1, healthSeconds: 5, deadline: 1, n: 8, mac },
        { t: 'relay-update', updateId: 'uabc', version: '0.3.2', sha256: sha, size: 1, healthSeconds: 3600, deadline: 1 }
      ]
    },
    'server stream metadata': { set: ServerStreams, samples: [{ t: 'tunnel', sid: 3, tunnelId: 'tAbC', kind: 'tcp', port: 22, nonce: 'bm9uY2Vub25jZQ' }] },
    'relay stream metadata (to the server)': { set: RelayStreams, samples: [{ t: 'artifact', sha256: sha, offset: 1024 }] },
    'relay stream metadata (to an agent)': { set: AgentStreams, samples: [{ t: 'tunnel', tunnelId: 'tAbC', kind: 'http', nonce: 'bm9uY2Vub25jZQ' }] }
  }
  return { sha, jobResult, good }
}

/** Small deterministic PRNG (mulberry32): a failing fuzz case can be replayed from its seed. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const junk: unknown[] = [null, 0, -1, 1.5, 2 ** 53, '', 'x'.repeat(5000), true, [], {}, [[]], { t: 'job' }, '../../etc/passwd', 'RG_ERR_AUTH', -0, 1e308]

/**
 * A type-confused version of a sample: a field of the wrong type, a field
 * missing, a field too many, a junk value, an unknown kind, or no object at
 * all. Returned only when the set really refuses it.
 */
export function confused (set: MessageSetLike, samples: Sample[], random: () => number): unknown {
  for (;;) {
    const sample = samples[Math.floor(random() * samples.length)]
    const keys = Object.keys(sample).filter(k => k !== 't')
    const key = keys[Math.floor(random() * keys.length)]
    const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)]
    let value: unknown
    switch (Math.floor(random() * 7)) {
      case 0: value = key === undefined ? { ...sample, t: 7 } : { ...sample, [key]: pick(junk) }; break
      case 1: { const v = { ...sample }; if (key !== undefined) delete v[key]; else v.extra = 1; value = v; break }
      case 2: value = { ...sample, [pick(['admin', 'sid2', '__proto__x', 'cmd'])]: pick(junk) }; break
      case 3: value = { ...sample, t: pick(['job2', '', 'JOB', 'auth', 'x'.repeat(300)]) }; break
      case 4: value = pick([null, [sample], 'text', 42, true]); break
      case 5: value = key === undefined ? { t: sample.t, x: [] } : { ...sample, [key]: [sample[key]] }; break
      default: value = key === undefined ? { ...sample, t: null } : { ...sample, [key]: typeof sample[key] === 'string' ? (sample[key] as string).repeat(600) : { nested: sample[key] } }
    }
    try {
      set.parse(value)
    } catch {
      return value
    }
  }
}
