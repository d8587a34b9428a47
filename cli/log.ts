import { pino, type Logger, type LevelWithSilent } from 'pino'
import PinoPretty from 'pino-pretty'

const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

/** JSON logs, or pino-pretty when writing to a terminal. Secrets are never logged (see protocol/auth redact). */
export function createLogger (level: string, destination: 1 | 2 = 1): Logger {
  const lvl = (levels.includes(level) ? level : 'info') as LevelWithSilent
  const tty = destination === 1 ? process.stdout.isTTY : process.stderr.isTTY
  const redact = { paths: ['token', 'joinToken', 'secret', '*.token', '*.secret', 'authorization', 'req.headers.authorization'], censor: '[redacted]' }
  if (tty === true) {
    return pino({ level: lvl, redact }, PinoPretty({ colorize: true, sync: true, destination, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' }))
  }
  return pino({ level: lvl, redact }, pino.destination({ dest: destination, sync: true }))
}
