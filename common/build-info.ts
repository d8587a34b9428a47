import { Gauge, type Registry } from 'prom-client'

/**
 * `relaygate_build_info{role, version, node}` = 1: which build runs where,
 * the usual Prometheus idiom (join it to other series on the instance).
 */
export function registerBuildInfo (registry: Registry, role: 'server' | 'relay', version: string): void {
  new Gauge({ name: 'relaygate_build_info', help: 'Always 1; the labels say which build runs: role, version, Node version.', labelNames: ['role', 'version', 'node'], registers: [registry] })
    .set({ role, version, node: process.version }, 1)
}
