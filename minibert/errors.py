"""The errors a user can mend: a bad data file or folder, a bad weights file or checkpoint.

Their messages name the file and say what was expected, so `python -m minibert` prints just
the message, `python -m minibert COMMAND: error: MESSAGE`, and exits with status 1, instead
of a traceback that buries the message under our own call stack. A missing file
(FileNotFoundError) is treated the same way. Any other exception is a bug, and keeps its
traceback; MINIBERT_TRACEBACK=1 shows the traceback of these ones too.

This module imports nothing, so the entry point can name these errors without importing torch.
"""


class InputError(ValueError):
    """Input that cannot be used as given; the message names it and says what was expected."""


class WeightsError(InputError):
    """A weights file or folder that cannot be loaded, or fetched; the message names the file
    (and the key, for a tensor)."""


INPUT_ERRORS = (InputError, FileNotFoundError)  # what the entry point reports as a message
