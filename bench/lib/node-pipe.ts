import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

/**
 * The least a Node.js process can do on a tunnel's path: accept a TCP
 * connection and pipe it both ways to one upstream connection (no framing,
 * no cipher, Nagle off). A chain of these is the floor for any path of that
 * many Node.js processes; P10 measures it beside ours and OpenSSH's.
 *
 * Run as a script: `node node-pipe.js <upstream port>` prints the port it
 * listens on and pipes until killed.
 */
export async function startNodePipe (upstreamPort: number): Promise<{ port: number, child: ChildProcess }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), String(upstreamPort)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', code => reject(new Error(`node-pipe exited ${String(code)}`)))
    child.stdout!.once('data', (line: Buffer) => resolve(Number(line.toString().trim())))
  })
  return { port, child }
}

function pipeUntilKilled (upstreamPort: number): void {
  const server = net.createServer(client => {
    const upstream = net.connect(upstreamPort, '127.0.0.1')
    for (const s of [client, upstream]) {
      s.setNoDelay(true)
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) pipeUntilKilled(Number(process.argv[2]))
