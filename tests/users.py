"""Running a command as an unprivileged user (``nobody``), for the tests of what permissions stop.

CI runs as root, and permissions do not stop root, so these tests drop to ``nobody`` with
``setpriv``. The child keeps one capability, ``CAP_DAC_READ_SEARCH``: it may read and search any
directory (so it reaches the interpreter, the virtual environment and the checkout wherever CI
cloned them, a 0700 temporary folder say), and it still may not write anything it does not own.
"""

from __future__ import annotations

AS_NOBODY = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]
