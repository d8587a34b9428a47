// htm bound to Preact's h: every component renders with html`...`.
import { h } from '/ui/vendor/preact.mjs'
import htm from '/ui/vendor/htm.mjs'

export const html = htm.bind(h)
