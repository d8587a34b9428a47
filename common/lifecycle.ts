/**
 * Shutdown in one pattern: each component registers its close step when it
 * is built, and the steps run in reverse order (the last built closes
 * first), each awaited, each once, as fastify's onClose hooks do. A step
 * that throws does not stop the others; the first error is rethrown at the end.
 */
export class Lifecycle {
  private readonly steps: Array<{ name: string, close: (graceful: boolean) => unknown }> = []
  private closing: Promise<void> | null = null

  get closed (): boolean {
    return this.closing !== null
  }

  /**
   * Registers a close step. `graceful` is true for close() (finish what is
   * in flight) and false for destroy() (drop everything now). A step
   * registered after shutdown began runs once the others are done.
   */
  onClose (name: string, close: (graceful: boolean) => unknown): void {
    if (this.closing !== null) {
      void this.closing.then(() => close(false), () => close(false))
      return
    }
    this.steps.push({ name, close })
  }

  /** Runs every step in reverse order of registration. Idempotent: later calls get the same promise. */
  close (graceful = true): Promise<void> {
    this.closing ??= (async () => {
      let first: unknown = null
      for (const step of this.steps.reverse()) {
        try {
          await step.close(graceful)
        } catch (err) {
          first ??= err
        }
      }
      this.steps.length = 0
      if (first !== null) throw first
    })()
    return this.closing
  }
}
