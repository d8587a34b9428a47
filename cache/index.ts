export { ArtifactCache, type CacheOptions, type CacheStats, type Upstream } from './cache.js'
