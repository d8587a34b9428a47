/**
 * Every message of every link, one schema per direction (see each module's
 * header for the list):
 *
 *   handshake.ts        the hellos of both links
 *   agent-messages.ts   agent <-> relay, and agent <-> server through the relay
 *   relay-messages.ts   relay <-> server
 *   stream-meta.ts      OPEN metadata of each stream kind, the artifact stream header
 *   settings.ts         the fleet settings the server pushes
 *
 * CONTROL frames carry one JSON message each; they are rare (sent on changes,
 * never per check-in), so JSON with a compiled schema check is cheap enough.
 */
export * from './settings.js'
export * from './handshake.js'
export * from './agent-messages.js'
export * from './relay-messages.js'
export * from './stream-meta.js'
export * from './control.js'
export * from './e2e.js'
