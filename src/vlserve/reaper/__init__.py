"""No process outlives the vlserve process that started it for a model.

- `guard_this_process()` (the server at start, each Ray replica actor): children inherit this process's token, and
  a watchdog ends them when this process ends, however it ends.
- `Scope` (one model's engine processes): tagged while they start, ended together when the model is unloaded.
- `tempdir(kind)`: a temporary folder removed with its owner's leftovers.
- `sweep()` (server start-up): ends and removes what dead owners left when their watchdog could not.

Standard library only; see guard.py for why tokens in the environment.
"""

from vlserve.reaper.guard import Scope, guard_this_process, tempdir
from vlserve.reaper.sweep import Leftovers, sweep

__all__ = ["Leftovers", "Scope", "guard_this_process", "sweep", "tempdir"]
