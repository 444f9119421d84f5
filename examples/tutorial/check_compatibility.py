"""What structflo-cser's users run: the package asks its registry for its weights.

Run by docs/tutorial.md: `python check_compatibility.py [VERSION]` prints the verified path of
the detector's weights, or the seed's WeightsCompatibilityError.
"""

from __future__ import annotations

import sys
import warnings

from modelcas import WeightsCompatibilityError

warnings.showwarning = lambda message, *_: print(f"warning: {message}")

from structflo.cser import weights_path  # noqa: E402 (after the warning format is set)

try:
    path = weights_path(sys.argv[1] if len(sys.argv) > 1 else None)
except WeightsCompatibilityError as e:
    print(f"WeightsCompatibilityError: {e}")
    sys.exit(1)
print(f"weights at {path}")
