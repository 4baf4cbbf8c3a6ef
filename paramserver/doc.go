// Package paramserver implements Cohort's sharded parameter servers: the flat parameter
// space of a job is split into contiguous ranges (Partition), each range is owned by one
// shard, workers push gradients to every shard and pull values back, and each shard
// applies the job's optimizer under the job's consistency mode.
//
// # Wire format
//
// Tensors travel as raw little-endian float32 bytes in chunks of ChunkBytes (1 MiB by
// default, at most MaxChunkBytes), so every gRPC message stays far below the message
// size limits set by ServerOptions. A job with gradient compression sends them as IEEE
// half floats or, for pushes, as sparse top-k indices and values instead (the push
// header's and the pull's encoding say which; compress.go). On little-endian hosts the bytes are zero-copy
// views of the []float32 backing arrays. Receivers decode chunks with chunkCodec into
// pooled chunk buffers they reuse across messages and streams, so a push or pull
// allocates almost nothing once warm (BENCHMARKS.md has the figures). A Client sends
// its pushes and pulls to each shard over one long-lived Session stream (session.go),
// so a step opens no streams; it falls back to the per-call Push and Pull RPCs when the
// session is busy or the server predates sessions.
//
// # Versions and consistency modes
//
// A shard's version counts the updates it has completed: 0 after Init, ck.Step after
// RestoreShard. Every request names the job's membership generation and is refused
// with FailedPrecondition when it differs from the shard's.
//
//   - "sync": Push(step t) is accepted only when t equals the version. The shard sums
//     n_r*g_r over the ranks 0..Workers-1; once every rank has pushed it applies the
//     optimizer to the sample-weighted mean sum(n_r*g_r)/sum(n_r) and the version
//     advances (with no optimizer step when sum(n_r) is 0). A second push of the same
//     rank for the same step is refused with AlreadyExists, which clients treat as
//     success. SetGeneration shrinks or grows the barrier at once: ranks are renumbered
//     by a membership change, so the gradients already pushed for the step in progress
//     are discarded and the new membership pushes that step again; a push of the step
//     the shard completed just before the change is answered AlreadyExists (another
//     shard may still need it).
//   - "async": every push is applied on arrival (the worker's own mean gradient) and
//     advances the version by one. A push computed against a future version is refused.
//   - "bounded": like async, but a push of step t is refused (FailedPrecondition) when
//     t < version - Staleness*Workers, that is when the gradient is more than Staleness
//     rounds of all workers old. The worker then pulls again and recomputes. Pulls
//     are stale synchronous parallel: min_step is the pulling worker's own step c (its
//     clock), and the pull waits until every other worker has pulled for at least
//     c-Staleness, so no worker runs more than Staleness steps ahead of the slowest.
//
// Pull(min_step) waits until the version is at least min_step (bounded mode: see above)
// and streams a consistent snapshot of one version. Checkpoint(step) waits for the version to reach step; in sync
// mode it writes exactly that version (FailedPrecondition when the shard is already
// past it), in the other modes the version reached, which it returns.
//
// In async and bounded modes a worker pushes the gradient it computed with the step
// set to the version it pulled; a bounded push refused as too stale (IsTooStale) is
// recomputed from a fresh pull.
//
// # Errors
//
// A refused call's status carries, besides its code and human-readable message, an
// errdetails.ErrorInfo (Domain ErrorDomain) whose Reason names the error kind, from
// the one table in errors.go; a Session's `failed` answer carries the same details.
// The Client decodes them (FromStatus), so errors.Is(err, ErrStaleGeneration) and the
// like hold on the worker as in the server. Statuses from servers that send no
// ErrorInfo are recognised by their code, or by the kind's text where a code is shared.
package paramserver
