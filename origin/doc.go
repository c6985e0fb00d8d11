// Package origin is eddy's access to the real shared directory: the FS interface both fusefs
// (metadata, writes) and cache (fetches) use, the path origin for any POSIX directory, and URL
// parsing for origin specs. It knows nothing about caching.
package origin
