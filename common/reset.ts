import net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'

/**
 * Ends a connection with a TCP reset: its peer sees ECONNRESET, not the clean
 * end a FIN would pass for (a transfer cut short taken for a whole one).
 *
 * node's resetAndDestroy() throws on a TLS socket (ERR_INVALID_HANDLE_TYPE:
 * its handle is the TLS layer), and a TLS socket destroyed sends a bare FIN,
 * which node's TLS takes for a clean end. A TLS socket over a TCP socket of
 * its own (every socket a tls.Server accepts: `_parent`) is ended by
 * resetting that TCP socket alone; the TLS socket closes with it. (Measured
 * here: destroying the TLS socket first closes the TCP socket with a FIN;
 * destroying it right after the reset crashed node (SIGSEGV) within a stress
 * script of 600 cuts; the reset alone ran 4,500 cuts without one.) A TLS socket
 * without one, a unix socket, a socket that already sent its FIN (libuv
 * cannot reset it), or any other stream, is destroyed.
 */
export function resetConnection (socket: Duplex): void {
  if (socket.destroyed) return
  const tcp = socket instanceof tls.TLSSocket ? (socket as tls.TLSSocket & { _parent?: unknown })._parent : socket
  // Without a handle (never connected, or closed) resetAndDestroy() would emit ERR_SOCKET_CLOSED.
  // After end() libuv cannot reset (uv_tcp_close_reset: EINVAL, which node
  // emits, and the handle stays open for good: a test's process never exited).
  if (!(tcp instanceof net.Socket) || (tcp as net.Socket & { _handle?: unknown })._handle == null || tcp.writableEnded || socket.writableEnded) {
    socket.destroy()
    return
  }
  try {
    tcp.resetAndDestroy()
  } catch {
    // A unix socket has no reset (ERR_INVALID_HANDLE_TYPE, before anything was done).
    tcp.destroy()
  }
}
