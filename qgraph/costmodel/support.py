"""Support rules: can the site's circuit run on the device at all?

Decided first and kept apart from the score, so an unsupported estimate says why ("needs
37 qubits; device has 27") and carries no time, instead of a very large one.
"""

from __future__ import annotations

from qgraph.costmodel.counts import computes_qaap_in_closed_form
from qgraph.costmodel.profiles import DeviceProfile
from qgraph.site import Site

__all__ = ["check_support"]


def check_support(site: Site, kernel: str, device: DeviceProfile, qubits: int) -> tuple[bool, str]:
    """(supported, reason): whether the site's circuit of ``qubits`` qubits can run on the
    device at all, independent of what it would cost."""
    if not site.supported:
        return False, f"the site itself is not supported: {site.support_reason}"
    if device.kind == "classical":
        return False, f"{device.name} is a classical device; use classical_estimate()"
    if kernel == "qaap" and (
        site.kv_len is None or site.head_dim is None or site.heads is None or site.seq_len is None
    ):
        return False, "attention site without 4-D q/k shapes (heads, seq_len, kv_len, head_dim)"
    if kernel == "qrce" and not site.shapes.get("ids"):
        return False, "embedding site without token-id shapes"
    if kernel == "qaap" and computes_qaap_in_closed_form(device):
        return True, "closed-form QAAP: no qubit limit"
    limit = device.get("max_qubits") if device.kind == "simulator" else device.get("num_qubits")
    if limit is not None and qubits > limit:
        return False, f"needs {qubits} qubits; device has {int(limit)}"
    return True, f"needs {qubits} qubits; device has {'no limit' if limit is None else int(limit)}"
