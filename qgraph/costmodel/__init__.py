"""The cost model: device profiles, quantum resources, and time/fidelity/money estimates.

    from qgraph.costmodel import estimate, classical_estimate, load, devices
    e = estimate(site, "ibm_heron_r2", precision=0.03)
    print(e.explain())                      # the whole arithmetic, every number sourced
    c = classical_estimate(site, "cpu_local")

Profiles are data files (``qgraph/costmodel/devices/*.toml``); ``calibrate()`` measures
this machine and writes the local ones (exact, shots, aer, cpu_local).
"""

from qgraph.costmodel.calibration import calibrate
from qgraph.costmodel.estimate import (
    ClassicalEstimate,
    Estimate,
    TimeBreakdown,
    classical_estimate,
    decide,
    estimate,
)
from qgraph.costmodel.profiles import (
    DeviceProfile,
    Quantity,
    device_names,
    devices,
    load,
    user_profile_dir,
)

__all__ = [
    "ClassicalEstimate",
    "DeviceProfile",
    "Estimate",
    "Quantity",
    "TimeBreakdown",
    "calibrate",
    "classical_estimate",
    "decide",
    "device_names",
    "devices",
    "estimate",
    "load",
    "user_profile_dir",
]
