// Package sim is the trace-driven, discrete-event simulator behind `eddy bench sched`. It runs a
// trace (bench/traces format) through the live scheduler's placement code (sched.Placer,
// sched.Cluster, sched.Placer.Schedule) with no FUSE and no daemon, and reports per policy the
// share of input bytes read from local caches, origin bytes, job completion times, makespan and
// the wall time of placement decisions. Scale times decisions on a synthetic cluster of any size.
//
// # Model
//
// Nodes have the trace's cores, memory, GPUs, cache size, link rate and local read rate. The
// origin has one total bandwidth. Each node's cache holds whole files, is evicted least recently
// used by bytes, and pins a task's inputs from assignment to the task's end (as the node cache
// does with prefetch-on-assign); a file that cannot be admitted because pinned data fills the
// cache is streamed from the origin on every read pass and not kept.
//
// Read/compute overlap: none for misses. When a task is assigned, the inputs its node lacks are
// fetched at once (prefetch on assign); the task holds its GPUs from assignment, and computes
// only when every input is local: run time = fetch stall + compute_s + the time to read at
// local_read_gbps what the fetch did not already read (the fetch is the first pass over a missed
// input; the other read_passes passes over the dataset, and every pass over a cached input, are
// local reads). A task
// whose input is already being fetched on its node waits for that fetch rather than fetching
// again (one fetch per chunk, as in the cache). Fetches share bandwidth max-min fairly: each is
// capped by its node's link divided among that node's fetches, and all share the origin. This
// is the same for every policy; it credits a locality win with the whole stall it avoids, which
// is what a GPU job that waits on its data loader sees.
//
// local_fraction counts every byte a task reads (all passes); first_read_local counts each
// input once per task (the share of inputs found already cached, or being fetched, at
// assignment).
//
// Scheduling passes run when something changes: a task finishes (its node is offered to the
// queue in order), a locality wait runs out, or a task arrives; a queued task is considered
// only when one of those can change its answer, so a pass over a long queue is cheap.
package sim
