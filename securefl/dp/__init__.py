"""Differential privacy: events as data, accountants as their interpreters, and mechanisms.

Submodules: :mod:`~securefl.dp.events` (frozen DP events), :mod:`~securefl.dp.accounting`
(``get_accountant("rdp" | "prv" | "pld")``, ``calibrate_noise_multiplier``),
:mod:`~securefl.dp.participation` (sampling schemes, ``assert_sampling_matches``),
:mod:`~securefl.dp.clipping`, :mod:`~securefl.dp.sampling` (AES-CTR source, exact discrete
Gaussian/Laplace), :mod:`~securefl.dp.fedavg` (central DP-FedAvg on an integer grid),
:mod:`~securefl.dp.adaptive` (quantile clipping), :mod:`~securefl.dp.distributed` (DDGauss in
secure aggregation), :mod:`~securefl.dp.local` (Opacus DP-SGD, cryptographic noise),
:mod:`~securefl.dp.ftrl` (DP-FTRL tree aggregation), :mod:`~securefl.dp.tree_accounting`
(one Gaussian per DP-FTRL release for PLD/PRV). See ``protocols/dp.md`` for
privacy units, adjacency, formulas and the floating-point mitigation. Heavy dependencies
(opacus, dp-accounting, torch) are imported lazily.
"""

from securefl.dp.errors import InvalidParameterError, SamplingMismatchError, UnsupportedEventError

__all__ = ["InvalidParameterError", "SamplingMismatchError", "UnsupportedEventError"]
