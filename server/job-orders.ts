/**
 * An order its agent has not answered (no progress, no result) within this
 * is sent again, at most ORDER_RESENDS times: an order can be lost with a
 * relay link that closed under it (a replica stopping), and the agent's
 * next arrival, which would send it again, may not come.
 */
export const ORDER_ANSWER_MS = 15_000
export const ORDER_RESENDS = 5
/** Orders watched at once, at most (the oldest is dropped: its agent's next arrival sends it). */
const MAX_WATCHED = 100_000

export interface SentOrder { jobId: string, endpointId: string, attempt: number, sentAt: number, resends: number }

/** The job orders sent from this replica and not answered yet, by job and endpoint. */
export class UnansweredOrders {
  private readonly orders = new Map<string, SentOrder>()

  constructor (private readonly answerMs = ORDER_ANSWER_MS) {}

  sent (order: SentOrder): void {
    const key = `${order.jobId}\n${order.endpointId}`
    this.orders.delete(key)
    if (this.orders.size >= MAX_WATCHED) this.orders.delete(this.orders.keys().next().value!)
    this.orders.set(key, order)
  }

  /** An answer (progress or a verified result) to the order watched or a later one: it arrived. */
  answered (jobId: string, endpointId: string, attempt: number): void {
    const key = `${jobId}\n${endpointId}`
    if ((this.orders.get(key)?.attempt ?? Infinity) <= attempt) this.orders.delete(key)
  }

  /** The orders unanswered for answerMs, no longer watched. */
  takeDue (now: number): SentOrder[] {
    const due: SentOrder[] = []
    for (const [key, order] of this.orders) {
      if (now - order.sentAt < this.answerMs) continue
      this.orders.delete(key)
      due.push(order)
    }
    return due
  }
}
