import { randomBytes } from 'node:crypto'

const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789'

/** Short random ids, safe in URLs and shells: "e" + 9 chars for endpoints, "r" + 9 for relays. */
export function newId (prefix: string): string {
  const bytes = randomBytes(9)
  let out = prefix
  for (const b of bytes) out += alphabet[b % alphabet.length]
  return out
}
