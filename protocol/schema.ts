/**
 * The building blocks of the message schemas: field types shared by every
 * link, and `messageSet()`, which compiles one discriminated union (on `t`)
 * into a parser that validates every field and names the first bad one.
 *
 * The schemas are TypeBox (JSON Schema at run time, TypeScript types at
 * compile time); TypeCompiler turns each into a checker function once, so
 * parsing a control message costs JSON.parse plus one compiled check.
 */
import { Type, type Static, type TObject, type TProperties, type TSchema, type TLiteral } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import { RelaygateError } from './errors.js'

/** Server-made ids (endpoints "e…", relays "r…", jobs "j…") and tunnel ids (base64url). */
export const Id = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' })
/** An agent's edge id: a UUID, generated once or given with --edge-id. */
export const EdgeId = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$' })
/** Nonces, proofs, download tokens, sealed blobs: base64url. */
export const B64 = (maxLength: number) => Type.String({ minLength: 1, maxLength, pattern: '^[A-Za-z0-9_-]+$' })
export const Sha256Hex = Type.String({ minLength: 64, maxLength: 64, pattern: '^[0-9a-f]{64}$' })
export const Text = (maxLength: number) => Type.String({ maxLength })
export const NonEmpty = (maxLength: number) => Type.String({ minLength: 1, maxLength })
export const U8 = Type.Integer({ minimum: 0, maximum: 0xff })
export const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff })
/** Byte counts and offsets: whole numbers up to 2^53. */
export const Size = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
/** The relay's number for one agent session on its link (never 0). */
export const Sid = Type.Integer({ minimum: 1, maximum: 0xffffffff })
/** An error code name (RG_ERR_*) as carried in messages. */
export const Code = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Z0-9_]+$' })
export const Seconds = Type.Integer({ minimum: 1, maximum: 0xffff })
/** A build's version as `relaygate --version` prints it (npm run dist --version). */
export const BuildVersion = Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9A-Za-z.+-]+$' })

/** One message kind: `{t: name, ...fields}`, no other field. */
export function message<N extends string, P extends TProperties> (t: N, fields: P): TObject<{ t: TLiteral<N> } & P> {
  return Type.Object({ t: Type.Literal(t), ...fields } as { t: TLiteral<N> } & P, { additionalProperties: false })
}

/** A fixed object (no other field). */
export function strict<P extends TProperties> (fields: P): TObject<P> {
  return Type.Object(fields, { additionalProperties: false })
}

/** The kind of a message schema: the literal of its `t`. */
function kindOf (schema: TSchema): string {
  const t = (schema as unknown as { properties?: { t?: { const?: unknown } } }).properties?.t?.const
  if (typeof t !== 'string') {
    // A union of variants of one kind (e.g. auth-result ok / refused).
    const variants = (schema as unknown as { anyOf?: TSchema[] }).anyOf
    if (variants !== undefined && variants.length > 0) return kindOf(variants[0])
    throw new TypeError('a message schema needs a literal t')
  }
  return t
}

/** Compiles a schema into a checker that throws RG_ERR_PROTOCOL naming the first bad field. */
export function compile<S extends TSchema> (what: string, schema: S): (value: unknown) => Static<S> {
  const check: TypeCheck<S> = TypeCompiler.Compile(schema)
  // A union of object variants (auth-result ok / refused): errors are reported
  // against the variant the value meant, picked by its literal fields.
  const variants = ((schema as unknown as { anyOf?: TSchema[] }).anyOf ?? []).map(v => ({ schema: v, check: TypeCompiler.Compile(v) }))
  return value => {
    if (check.Check(value)) return value
    const meant = variants.find(v => literalsMatch(v.schema, value)) ?? variants[0]
    throw protocolError(what, meant?.check ?? check, value)
  }
}

/** True when every literal-valued property of an object schema has that value in `value`. */
function literalsMatch (schema: TSchema, value: unknown): boolean {
  const props = (schema as unknown as { properties?: Record<string, { const?: unknown }> }).properties
  if (props === undefined || value === null || typeof value !== 'object') return false
  return Object.entries(props).every(([k, p]) => p.const === undefined || (value as Record<string, unknown>)[k] === p.const)
}

function protocolError (what: string, check: TypeCheck<TSchema>, value: unknown): RelaygateError {
  const first = check.Errors(value).First()
  const field = first === undefined || first.path === '' ? '(whole message)' : first.path.slice(1).replaceAll('/', '.')
  const detail = first?.message ?? 'does not match its schema'
  return new RelaygateError('RG_ERR_PROTOCOL', `${what}: field ${field}: ${detail}`)
}

export interface MessageSet<S extends TSchema> {
  /** Validates a decoded JSON value; throws RG_ERR_PROTOCOL naming the field. */
  parse: (value: unknown) => Static<S>
  /** The kinds (`t` values) of this set. */
  readonly kinds: ReadonlySet<string>
  /** The schemas, by kind (for docs and tests). */
  readonly schemas: ReadonlyMap<string, TSchema>
}

/**
 * One direction of one link: a union of message kinds. Parsing looks up the
 * kind first (an unknown `t` is refused by name), then runs that kind's
 * compiled check, so an error names the field of the kind that was meant.
 */
export function messageSet<const S extends readonly TSchema[]> (what: string, schemas: S): MessageSet<S[number]> {
  const byKind = new Map<string, TSchema>()
  const checks = new Map<string, (value: unknown) => unknown>()
  for (const schema of schemas) {
    const t = kindOf(schema)
    if (byKind.has(t)) throw new TypeError(`${what}: two schemas for ${t}`)
    byKind.set(t, schema)
    checks.set(t, compile(`${what} ${t}`, schema))
  }
  return {
    kinds: new Set(byKind.keys()),
    schemas: byKind,
    parse: (value: unknown) => {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new RelaygateError('RG_ERR_PROTOCOL', `${what}: not a JSON object`)
      }
      const t = (value as { t?: unknown }).t
      const check = typeof t === 'string' ? checks.get(t) : undefined
      if (check === undefined) {
        throw new RelaygateError('RG_ERR_PROTOCOL', `${what}: field t: unknown message ${JSON.stringify(t)?.slice(0, 64) ?? 'undefined'}`)
      }
      return check(value) as Static<S[number]>
    }
  }
}

/** Adds the relay's `sid` to an agent message schema (what the relay passes on, naming the agent). */
export function withSid<P extends TProperties> (schema: TObject<P>): TObject<P & { sid: typeof Sid }> {
  return Type.Object({ ...schema.properties, sid: Sid } as P & { sid: typeof Sid }, { additionalProperties: false })
}

export { Type, type Static, type TSchema }
