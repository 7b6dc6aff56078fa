"""The one error type the tuner raises for input it cannot tune."""


class TuneError(ValueError):
    """Bad input or an impossible request; the message names what and why."""


class TargetError(TuneError):
    """A target that cannot be built; the message names the input and the rule."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; `results` holds what was proven before it.

    The last result, if any was proven for the search under way, is marked
    `interrupted`: its batch fits, the boundary above it was not reached.
    """

    def __init__(self, results: tuple = ()):
        super().__init__("search interrupted")
        self.results = tuple(results)
