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

__all__ = [
    "PROTOCOL_VERSION",
    "ConfigurationError",
    "LocalProtocolError",
    "PrivacyBudgetExceededError",
    "ProtocolError",
    "RemoteProtocolError",
    "SecureFLError",
    "__version__",
]
