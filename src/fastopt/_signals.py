"""Graceful stops: SIGINT (Ctrl-C) and SIGTERM during ``Trainer.fit``.

While ``fit`` runs (in the main thread), the first SIGINT or SIGTERM only sets a flag; the
loop checks it after each step, so the model and the optimizer are always consistent
when training stops. Then:

- SIGINT: ``fit`` returns the History with ``interrupted = True`` (a ``Checkpoint``
  callback writes a final, resumable checkpoint). A second Ctrl-C raises
  ``KeyboardInterrupt`` at once.
- SIGTERM (a scheduler, ``kill``, a container stop): the same graceful stop and final
  checkpoint, then the signal is delivered again as it would have been without fastopt:
  with the default disposition the process ends as killed by SIGTERM (exit status 143 in
  a shell, ``-15`` for ``subprocess``), so supervisors see what happened; a handler the
  program installed itself runs instead. A second SIGTERM is delivered at once.

Outside the main thread no handler can be installed and signals behave as usual.
"""

import signal
import threading

__all__ = ["InterruptFlag"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                 if s is not None)


class InterruptFlag:
    """Turns the first SIGINT / SIGTERM during fit into a flag the loop checks after each
    step. ``raised``: a stop was requested; ``signum``: which signal asked for it."""

    def __init__(self):
        self.raised = False
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # ignored on purpose (nohup, a background job): leave it so
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except (ValueError, OSError):  # pragma: no cover - exotic platforms
                    pass
        return self

    @property
    def terminated(self):
        return self.signum == getattr(signal, "SIGTERM", None)

    def _handle(self, signum, frame):
        if self.raised:  # a second signal: the user (or the supervisor) insists
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._restore()
            signal.raise_signal(signum)
            return
        self.raised = True
        self.signum = signum

    def _restore(self):
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __exit__(self, *exc):
        self._restore()
        if self.terminated:
            # Deliver the deferred SIGTERM now that the step and the final checkpoint are
            # done: the default disposition ends the process, a program's handler runs.
            signal.raise_signal(self.signum)
        return False


_InterruptFlag = InterruptFlag
