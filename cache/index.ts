export { ArtifactCache, hashFile, SHA256_HEX, type CacheOptions, type CacheStats, type Upstream } from './cache.js'
