import type { Duplex } from 'node:stream'
import { RelaygateError } from './errors.js'
import type { MuxStream } from './stream.js'

/**
 * Joins two duplex streams both ways with backpressure (pipe pauses a side
 * whose peer cannot take more, so flow-control windows hold across hops).
 * An error or abrupt close on one side destroys the other, carrying the
 * error's code; a clean end in each direction ends the other side in turn.
 * `cutB`, if given, ends b instead of destroy() when a is cut (the agent
 * resets its target's TCP connection: a FIN would pass an upload cut short
 * for the whole of it).
 */
export function splice (a: Duplex, b: Duplex, cutB?: (b: Duplex) => void): void {
  a.pipe(b)
  b.pipe(a)
  const link = (from: Duplex, to: Duplex, cut: (err: RelaygateError) => void): void => {
    from.on('error', err => {
      if (!to.destroyed) cut(err instanceof RelaygateError ? err : new RelaygateError('RG_ERR_STREAM_RESET', err.message))
    })
    from.once('close', () => {
      if (to.destroyed) return
      const clean = from.readableEnded && from.writableFinished
      if (!clean) cut(new RelaygateError('RG_ERR_STREAM_RESET', 'the other side closed abruptly'))
    })
  }
  link(a, b, err => cutB === undefined ? b.destroy(err) : cutB(b))
  link(b, a, err => a.destroy(err))
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
