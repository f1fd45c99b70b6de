"""The platform simulator (ARCHITECTURE section 3): ``simulate(SimConfig.preset("small"), out)``.

See ``docs/simulator.md`` for the generative model, its parameters and switches.
"""

from liverank.data.sim.calibration import CalibrationReport
from liverank.data.sim.config import PRESETS, SWITCHES, SimConfig
from liverank.data.sim.simulate import generate, simulate

__all__ = ["PRESETS", "SWITCHES", "CalibrationReport", "SimConfig", "generate", "simulate"]
