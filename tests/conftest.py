"""Suite-wide settings."""

import os

# see liverank.cli: OpenMP spin-waiting slows torch badly on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
