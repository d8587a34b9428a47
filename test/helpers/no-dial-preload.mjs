// Preload (node --import) that records every attempt of this process to open
// an outbound connection: one JSON line per attempt, appended to the file
// named by NO_DIAL_LOG. The calls still proceed; the test reads the file.
//
// Watched: the 'net.client.socket' diagnostics channel (net.connect and
// everything built on it: http, undici/fetch, ws), net.Socket#connect (also
// tls.connect), tls.connect, dgram.createSocket, and dns.lookup /
// dns.promises.lookup. Looking up an IP literal is not recorded: Node does
// that itself when a server listens on an address (server.listen(port, host)),
// it answers locally without any traffic, and a dial to an IP literal is
// caught by the socket hooks anyway.
import dc from 'node:diagnostics_channel'
import net from 'node:net'
import tls from 'node:tls'
import dgram from 'node:dgram'
import dns from 'node:dns'
import { appendFileSync } from 'node:fs'

const logFile = process.env.NO_DIAL_LOG
if (logFile === undefined || logFile === '') throw new Error('no-dial-preload: set NO_DIAL_LOG to a file path')
// Proof that the preload ran in this process (kept apart from the dial log).
appendFileSync(`${logFile}.loaded`, `${process.pid}\n`)

function describe (value) {
  if (value === null || value === undefined) return value
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value
  if (typeof value === 'function') return '[function]'
  if (Array.isArray(value)) return value.map(describe)
  if (typeof value === 'object') {
    const out = {}
    for (const key of ['host', 'hostname', 'port', 'path', 'family', 'localAddress', 'servername', 'type']) {
      if (key in value && typeof value[key] !== 'object' && typeof value[key] !== 'function') out[key] = value[key]
    }
    return out
  }
  return String(value)
}

function record (kind, args) {
  const line = JSON.stringify({
    kind,
    pid: process.pid,
    args: describe(args),
    stack: (new Error().stack ?? '').split('\n').slice(2, 12).map(s => s.trim())
  })
  try {
    appendFileSync(logFile, line + '\n')
  } catch {}
}

// Published by net.connect() as the client socket is created (before it connects).
dc.subscribe('net.client.socket', () => record('net.client.socket', []))

const socketConnect = net.Socket.prototype.connect
net.Socket.prototype.connect = function connect (...args) {
  record('net.Socket.connect', args)
  return socketConnect.apply(this, args)
}

const tlsConnect = tls.connect
tls.connect = function connect (...args) {
  record('tls.connect', args)
  return tlsConnect.apply(this, args)
}

const createSocket = dgram.createSocket
dgram.createSocket = function (...args) {
  record('dgram.createSocket', args)
  return createSocket.apply(this, args)
}

const lookup = dns.lookup
dns.lookup = function (hostname, ...rest) {
  if (typeof hostname !== 'string' || net.isIP(hostname) === 0) record('dns.lookup', [hostname])
  return lookup.call(this, hostname, ...rest)
}

const promiseLookup = dns.promises.lookup
dns.promises.lookup = function (hostname, ...rest) {
  if (typeof hostname !== 'string' || net.isIP(hostname) === 0) record('dns.promises.lookup', [hostname])
  return promiseLookup.call(this, hostname, ...rest)
}
