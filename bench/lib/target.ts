import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** An agent-side HTTP target: `/small` answers a few bytes, `/bytes/<n>` streams n bytes fast, PUT `/sink` counts what it is sent. */
export async function startBenchTarget (): Promise<{ url: string, close: () => Promise<void> }> {
  const block = Buffer.alloc(256 * 1024, 0x5a)
  const server = http.createServer((req, res) => {
    if (req.url === '/sink') {
      let bytes = 0
      req.on('data', (c: Buffer) => { bytes += c.length })
      req.on('end', () => res.end(JSON.stringify({ bytes })))
      return
    }
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '')
    if (m === null) {
      res.setHeader('content-type', 'application/json')
      res.end('{"ok":true}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Number(m[1]) })
    writeBlocks(res, block, Number(m[1]))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => { server.closeAllConnections(); await new Promise(r => server.close(r)) }
  }
}

/** GET with node:http, discarding the body; returns seconds and bytes. */
export async function timedGet (url: string, headers: Record<string, string> = {}): Promise<{ seconds: number, bytes: number, status: number }> {
  const t0 = process.hrtime.bigint()
  return await new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, res => {
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('end', () => resolve({ seconds: Number(process.hrtime.bigint() - t0) / 1e9, bytes, status: res.statusCode ?? 0 }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

/** PUT of `bytes` bytes (a repeated block, streamed with backpressure); returns seconds and the bytes the target counted. */
export async function timedPut (url: string, bytes: number, headers: Record<string, string> = {}): Promise<{ seconds: number, bytes: number }> {
  const block = Buffer.alloc(256 * 1024, 0x3c)
  const t0 = process.hrtime.bigint()
  return await new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { ...headers, 'content-length': bytes }, agent: false }, res => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve({ seconds: Number(process.hrtime.bigint() - t0) / 1e9, bytes: (JSON.parse(text) as { bytes: number }).bytes }))
      res.on('error', reject)
    })
    req.on('error', reject)
    writeBlocks(req, block, bytes)
  })
}

/** Writes `bytes` bytes of `block` repeated, honouring backpressure, then ends. */
function writeBlocks (out: http.ServerResponse | http.ClientRequest, block: Buffer, bytes: number): void {
  let left = bytes
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, block.length)
      left -= n
      if (!out.write(n === block.length ? block : block.subarray(0, n))) {
        out.once('drain', pump)
        return
      }
    }
    out.end()
  }
  pump()
}
