import type { Duplex } from 'node:stream'
import { RelaygateError } from './errors.js'
import type { MuxStream } from './stream.js'

/**
 * Joins two duplex streams both ways with backpressure (pipe pauses a side
 * whose peer cannot take more, so flow-control windows hold across hops).
 * An error or abrupt close on one side destroys the other, carrying the
 * error's code; a clean end in each direction ends the other side in turn.
 */
export function splice (a: Duplex, b: Duplex): void {
  a.pipe(b)
  b.pipe(a)
  const link = (from: Duplex, to: Duplex): void => {
    from.on('error', err => {
      if (!to.destroyed) to.destroy(err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_STREAM_RESET', err.message))
    })
    from.once('close', () => {
      if (to.destroyed) return
      const clean = from.readableEnded && from.writableFinished
      if (!clean) to.destroy(new RelaygateError('RG_ERR_STREAM_RESET', 'the other side closed abruptly'))
    })
  }
  link(a, b)
  link(b, a)
}

/**
 * splice() for two mux streams (the relay joining a server stream to an
 * agent stream), with cut-through both ways: data that finds nothing queued
 * goes from one link to the other without passing through the streams.
 */
export function spliceStreams (a: MuxStream, b: MuxStream): void {
  splice(a, b)
  a.forwardTo(b)
  b.forwardTo(a)
}
