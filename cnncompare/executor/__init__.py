"""Jobs out of the web server's process: a training, an export, a dataset decode, a gallery build is a `Job` (a
picklable description: an engine function by name and its arguments) that an executor runs and streams back.

- `inline`: in the calling process (the CLI; a ZeroGPU Space, where the GPU exists only inside `spaces.GPU`).
- `local`: a fresh worker process per job on this machine, forked from a fork server that imported the engine once
  (`local.LocalExecutor`): its memory goes back to the system when the job ends, it is watched against the memory it was
  admitted with and ended alone past it, a `kill -9` fails only its own job, and it pauses for the server's interactive
  work (`link`).
- `ray`: each job a Ray task on a cluster with its resources (`cluster.RayExecutor`), for more than one machine.

Every executor answers the same two calls: `stream(job, should_stop)` (what the job's generator yields, in
order) and `call(job)` (a function job's value). A job that ends without finishing (killed, over its memory, its
node lost) raises `JobEnded` with one sentence for its visitor.
"""

from .base import KINDS, Executor, Job, JobEnded, resolve, run_here

__all__ = ["Job", "JobEnded", "Executor", "resolve", "run_here", "KINDS"]
