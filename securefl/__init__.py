"""securefl: privacy-preserving federated fine-tuning of foundation models."""

from securefl.errors import (
    ConfigurationError,
    LocalProtocolError,
    PrivacyBudgetExceededError,
    ProtocolError,
    RemoteProtocolError,
    SecureFLError,
)

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

#: Names re-exported lazily from :mod:`securefl.api` (``import securefl`` stays light).
_API = (
    "CKKS",
    "CentralDP",
    "DistributedDP",
    "Federation",
    "FixedSize",
    "LocalDPSGD",
    "NoDP",
    "Plain",
    "Poisson",
    "SecAgg",
    "SecAggPlus",
    "Trainer",
)


def __getattr__(name: str) -> object:
    if name in _API:
        from securefl import api

        return getattr(api, name)
    raise AttributeError(f"module 'securefl' has no attribute {name!r}")


__all__ = [
    "PROTOCOL_VERSION",
    "ConfigurationError",
    "LocalProtocolError",
    "PrivacyBudgetExceededError",
    "ProtocolError",
    "RemoteProtocolError",
    "SecureFLError",
    "__version__",
    *_API,
]
