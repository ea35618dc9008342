"""Ed25519 keys for signing the ledger head, and their custody.

The signing key stays with the party that runs training; auditors need only the public key
(or its fingerprint) to check a ledger. Keys are :mod:`cryptography` key objects, never bare
bytes inside the package (pyca's "keys are types" habit); this module is the only place that
parses or writes key files.

Custody (issue 14, Trust 1): whoever holds the private key can rewrite and re-sign a ledger's
whole history, so the key must never sit in a run directory that is handed to others. The
ledger signs through a :class:`Signer` (a KMS/HSM plugs in here); the file-based
:class:`FileSigner` keeps keys in a key directory the operator chooses (``key_dir=`` or
``SECUREFL_KEY_DIR``, default ``$XDG_CONFIG_HOME/securefl/keys``), created 0700 with key
files 0600, and refuses a key that others can read or that lies inside the run directory it
signs for. :func:`assert_no_signing_key_under` checks a directory handed to an auditor.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefl.errors import ConfigurationError

KEY_DIR_ENV = "SECUREFL_KEY_DIR"
ANCHOR_LOG_NAME = "anchors.jsonl"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@runtime_checkable
class Signer(Protocol):
    """What the ledger needs to sign its head: the public key and ``sign(message)``.

    :class:`Ed25519PrivateKey` satisfies it; so does :class:`FileSigner`, and so can an adapter
    to a KMS or HSM that never exposes the private key (its ``sign`` must return a raw 64-byte
    Ed25519 signature over ``message``).
    """

    def public_key(self) -> Ed25519PublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


SigningKeySource = Ed25519PrivateKey | bytes | str | os.PathLike[str]
PublicKeySource = Ed25519PublicKey | Ed25519PrivateKey | bytes | str | os.PathLike[str]


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key from the OS CSPRNG (via OpenSSL)."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what an auditor pins or publishes."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(public_key_raw(pub)).hexdigest()


def _read(source: bytes | str | os.PathLike[str], what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} file {path}: {exc.strerror}", parameter=what
        ) from exc


def load_signing_key(source: SigningKeySource) -> Ed25519PrivateKey:
    """A signing key from a key object, PEM/raw bytes, or a PEM file path."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    data = _read(source, "signing_key")
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            "not an unencrypted PEM Ed25519 private key", parameter="signing_key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("key is not Ed25519", parameter="signing_key")
    return key


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """A verification key from a key object, PEM/raw bytes, or a PEM/hex file path."""
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, bytes) and len(source) == 32:  # raw key: never strip its bytes
        return Ed25519PublicKey.from_public_bytes(source)
    data = _read(source, "public_key").strip()
    if len(data) == 64 and not data.startswith(b"-----"):
        try:
            data = bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigurationError("not a hex public key", parameter="public_key") from exc
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError("not a PEM Ed25519 public key", parameter="public_key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("key is not Ed25519", parameter="public_key")
    return key


def write_keypair(private_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a new signing key (PEM, mode 0600) and its public key beside it (``.pub``).

    Returns the public key path. Refuses to overwrite an existing key unless asked: losing a
    signing key means the ledger cannot be extended under the same pinned identity.
    """
    priv = Path(private_path)
    pub = priv.with_name(priv.name + ".pub")
    if not overwrite and (priv.exists() or pub.exists()):
        raise ConfigurationError(f"{priv} or {pub} already exists", parameter="key_path")
    key = generate_signing_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(priv, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub


# --------------------------------------------------------------------------- custody
def default_key_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$SECUREFL_KEY_DIR``, else ``$XDG_CONFIG_HOME/securefl/keys``, else
    ``~/.config/securefl/keys`` (read from ``environ``, default :data:`os.environ`)."""
    env = os.environ if environ is None else environ
    explicit = env.get(KEY_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(config) / "securefl" / "keys"


def _inside(path: Path, directory: Path) -> bool:
    p, d = path.resolve(), directory.resolve()
    return p == d or d in p.parents


def ensure_key_dir(key_dir: str | os.PathLike[str] | None = None) -> Path:
    """The key directory, created with mode 0700; refused if others may write to it (they
    could replace a key) or, for a directory we did not just create, read it."""
    d = Path(key_dir).expanduser() if key_dir is not None else default_key_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = d.stat().st_mode
    if not stat.S_ISDIR(mode):
        raise ConfigurationError(f"{d} is not a directory", parameter="key_dir")
    if mode & 0o077:
        raise ConfigurationError(
            f"key directory {d} is accessible to other users (mode {mode & 0o777:o});"
            f" run: chmod 700 {d}",
            parameter="key_dir",
        )
    return d


def check_key_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a private key file that other users can read or write (like ssh does)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read signing key {p}: {exc.strerror}", parameter="signing_key"
        ) from exc
    if not stat.S_ISREG(mode):
        raise ConfigurationError(f"{p} is not a regular file", parameter="signing_key")
    if mode & 0o077:
        raise ConfigurationError(
            f"signing key {p} is accessible to other users (mode {mode & 0o777:o});"
            f" run: chmod 600 {p}",
            parameter="signing_key",
        )
    return p


class FileSigner:
    """An Ed25519 key kept in a file outside every run directory (see the module docstring).

    ``run_dir`` is the directory whose ledger this key signs: a key path inside it is refused,
    because a run directory is what operators hand to auditors.
    """

    def __init__(
        self,
        key_path: str | os.PathLike[str],
        *,
        run_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        path = Path(key_path).expanduser()
        if run_dir is not None and _inside(path, Path(run_dir)):
            raise ConfigurationError(
                f"the signing key {path} lies inside the run directory {run_dir}: anyone given"
                " the run directory could rewrite and re-sign its ledger; keep keys in a key"
                f" directory (key_dir= or ${KEY_DIR_ENV})",
                parameter="key_path",
            )
        self.path = check_key_file(path)
        self._key = load_signing_key(self.path)

    @property
    def public_key_path(self) -> Path:
        return self.path.with_name(self.path.name + ".pub")

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self._key.public_key())

    def __repr__(self) -> str:  # never the key material
        return f"FileSigner({str(self.path)!r}, fingerprint={self.fingerprint[:16]}…)"


def default_signer(
    run_name: str,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    key_dir: str | os.PathLike[str] | None = None,
    create: bool = True,
) -> FileSigner:
    """The run's signer: ``KEY_DIR/<run_name>.pem`` (created once, 0600, public key beside it).

    ``key_dir`` defaults to :func:`default_key_dir`; ``run_dir`` is the directory the ledger is
    written to, and the key directory must lie outside it. A resumed run finds the same key
    under the same ``run_name``.
    """
    if not isinstance(run_name, str) or not _NAME_RE.match(run_name):
        raise ConfigurationError(
            "must be 1-128 characters of letters, digits, '.', '_' or '-'", parameter="run_name"
        )
    d = Path(key_dir).expanduser() if key_dir is not None else default_key_dir()
    if run_dir is not None and _inside(d, Path(run_dir)):
        raise ConfigurationError(
            f"key directory {d} lies inside the run directory {run_dir}", parameter="key_dir"
        )
    d = ensure_key_dir(d)
    path = d / f"{run_name}.pem"
    if not path.exists():
        if not create:
            raise ConfigurationError(f"no signing key {path}", parameter="run_name")
        write_keypair(path)
    return FileSigner(path, run_dir=run_dir)


def default_anchor_log(key_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where published head anchors go by default: ``anchors.jsonl`` next to the keys."""
    d = Path(key_dir).expanduser() if key_dir is not None else default_key_dir()
    return d / ANCHOR_LOG_NAME


def signing_keys_under(directory: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``directory`` that holds an Ed25519 private key (PEM or raw 32 bytes
    named like a key), i.e. anything that could re-sign a ledger found there."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            p = Path(root) / name
            try:
                if p.is_symlink() or not p.is_file() or p.stat().st_size > 1 << 20:
                    continue
                data = p.read_bytes()
            except OSError:
                continue
            pem = b"PRIVATE KEY-----" in data  # PKCS#8, "OPENSSH", "EC", "ENCRYPTED" ...
            raw = len(data) == 32 and name.endswith((".key", ".pem", ".bin", ".raw"))
            if pem or raw:
                found.append(p)
    return sorted(found)


def assert_no_signing_key_under(directory: str | os.PathLike[str]) -> None:
    """Raise if any file under ``directory`` holds a private key: a run directory handed to an
    auditor must contain nothing that can forge its ledger's history (issue 14, Trust 1)."""
    found = signing_keys_under(directory)
    if found:
        shown = ", ".join(str(p) for p in found[:5])
        raise ConfigurationError(
            f"private key material under {directory}: {shown}", parameter="run_dir"
        )
