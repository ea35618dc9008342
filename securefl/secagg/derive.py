"""Every key, stream and signed transcript of a SecAgg(+) round, in one place.

Keys come from :func:`securefl.crypto.kdf.derive_key` (HKDF-SHA256 whose ``info`` binds the
protocol name and version, the label, the session id, the round, two party ids, ``extra`` and
the length; ``protocols/secagg-primitives.md`` §2). The session id already binds the cohort,
threshold, identity keys, layout and global-model digests (``SecAggConfig.session_id``, spec
§3), so a client with another view derives unrelated keys (Pasquini et al. 2022). Transcripts
and associated data are not HKDF outputs but byte strings that start with a stage label, so a
signature or a ciphertext of one stage is never valid in another.

Every derived key, stream and transcript (the stage is bound by the label or prefix):

==========================  ==========================  ====================================
function                    HKDF label / byte prefix    bound to (ikm; context; output)
==========================  ==========================  ====================================
SecAggConfig.session_id     SHA-256 of                  version, round, n, t, k, b, d, m,
                            ``securefl/secagg/          ids, identity keys, layout and model
                            session\\0``                digests, nonce, threat model, γ, σ
graph_seed                  ``neighbour-graph``         ikm session id; session, round,
                                                        parties (0, 0); 32 B public key of
                                                        the graph-shuffle AES-CTR stream
share_key                   ``share-encryption``        ikm X25519(c_u, c_v); session, round,
                                                        parties (min, max); 32 B AES-GCM key
share_associated_data       ``securefl/secagg/v1/       stage 1, session, round, sender,
                            share\\0``                  recipient (nonce: direction_nonce)
self_mask_key               ``self-mask``               ikm b_u; session, round, parties
                                                        (u, u), extra layout digest; 16 B key
                                                        of the mask PRG stream
pairwise_mask_key           ``pairwise-mask``           ikm X25519(s_u, s_v); session, round,
                                                        parties (min, max), extra layout
                                                        digest; 16 B key of the mask PRG
advertise_transcript        ``securefl/secagg/v1/       stage 0, session, round, signer u,
                            advertise\\0``              c_u^PK, s_u^PK (Ed25519-signed)
consistency_transcript      ``securefl/secagg/v1/       stage 3, session, round, signer u, its
                            consistency\\0``            ephemeral c_u^PK, s_u^PK, U3 (signed)
node_binding_transcript     ``securefl/engine/v2/       engine stage 0 (not a SecAgg message):
                            node-binding\\0``           session, round, the engine node's 32 B
                                                        server challenge, SHA-256 of u's
                                                        AdvertiseKeys bytes (signed by u)
kat_seed                    SHA-256 of ``securefl/      label, party id: known-answer vectors
                            secagg/kat/v1/<l>/<u>``     and tests only, never a real round
==========================  ==========================  ====================================

The byte layouts are normative in ``protocols/secagg.md`` §3, §4, §7 and
``protocols/secagg-primitives.md`` §2; ``protocols/vectors/`` pins every one of them.
``node_binding_transcript`` belongs to the engine (``protocols/engine-flower.md`` §3) and is
not part of the SecAgg wire format; it lives here because it is signed with the same Ed25519
identity key as the advertisement, and all labels signed under that key must be read side by
side to see that they are distinct and none is a prefix of another.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING

from securefl.crypto import kdf, prg
from securefl.errors import LocalProtocolError
from securefl.secagg.messages import Ids, pack_ids

if TYPE_CHECKING:
    from securefl.secagg.config import SecAggConfig

SHARE_AD_LABEL = b"securefl/secagg/v1/share\x00"
ADVERTISE_LABEL = b"securefl/secagg/v1/advertise\x00"
CONSISTENCY_LABEL = b"securefl/secagg/v1/consistency\x00"
NODE_BINDING_LABEL = b"securefl/engine/v2/node-binding\x00"
#: Length of the server's per-node challenge in the engine's stage-0 request.
NODE_CHALLENGE_BYTES = 32


def graph_seed(config: SecAggConfig) -> bytes:
    """Shared public randomness: HKDF(ikm = session id, label ``neighbour-graph``, ids 0, 0)."""
    return kdf.derive_key(
        config.session_id,
        label=kdf.LABEL_NEIGHBOUR_GRAPH,
        session_id=config.session_id,
        round_index=config.round_index,
        party_a=0,
        party_b=0,
    )


def share_key(config: SecAggConfig, shared_secret: bytes, u: int, v: int) -> bytes:
    """AES-256-GCM key of the pair: HKDF(KA(c_u, c_v), ``share-encryption``, …, min, max)."""
    return kdf.derive_pairwise_key(
        shared_secret,
        label=kdf.LABEL_SHARE_ENCRYPTION,
        session_id=config.session_id,
        round_index=config.round_index,
        me=u,
        peer=v,
    )


def share_associated_data(config: SecAggConfig, sender: int, recipient: int) -> bytes:
    """AES-GCM associated data of e_{u,v}: label, session id, round, sender, recipient."""
    return (
        SHARE_AD_LABEL
        + config.session_id
        + struct.pack("<III", config.round_index, sender, recipient)
    )


def self_mask_key(config: SecAggConfig, seed: bytes, u: int) -> bytes:
    """PRG key of the self mask: HKDF(b_u, ``self-mask``, session, round, u, u,
    extra = layout digest)."""
    return kdf.derive_key(
        seed,
        label=kdf.LABEL_SELF_MASK,
        session_id=config.session_id,
        round_index=config.round_index,
        party_a=u,
        party_b=u,
        extra=config.layout_digest,
        length=prg.PRG_KEY_BYTES,
    )


def pairwise_mask_key(config: SecAggConfig, shared_secret: bytes, u: int, v: int) -> bytes:
    """PRG key of s_{u,v}: HKDF(KA(s_u, s_v), ``pairwise-mask``, session, round, min, max,
    extra = layout digest)."""
    return kdf.derive_pairwise_key(
        shared_secret,
        label=kdf.LABEL_PAIRWISE_MASK,
        session_id=config.session_id,
        round_index=config.round_index,
        me=u,
        peer=v,
        extra=config.layout_digest,
        length=prg.PRG_KEY_BYTES,
    )


def advertise_transcript(
    config: SecAggConfig, client_id: int, cipher_pk: bytes, mask_pk: bytes
) -> bytes:
    """Bytes signed in round 0: label, session id, round, client id, both public keys."""
    return (
        ADVERTISE_LABEL
        + config.session_id
        + struct.pack("<II", config.round_index, client_id)
        + cipher_pk
        + mask_pk
    )


def consistency_transcript(
    config: SecAggConfig,
    client_id: int,
    cipher_pk: bytes,
    mask_pk: bytes,
    survivors: Ids,
    *,
    packed: bytes | None = None,
) -> bytes:
    """Bytes signed in round 3: label, session id, round, signer id, the signer's *ephemeral*
    public keys of this attempt, then U3.

    The ephemeral keys make a signature unusable in any other run, even one that reuses the
    session id (a server re-running a round with the same config cannot replay last attempt's
    confirmations of a survivor set). ``packed`` may carry ``LE32(|U3|) || LE32(ids)``
    already computed for ``survivors``.
    """
    return (
        CONSISTENCY_LABEL
        + config.session_id
        + struct.pack("<II", config.round_index, client_id)
        + cipher_pk
        + mask_pk
        + (pack_ids(survivors) if packed is None else packed)
    )


def node_binding_transcript(config: SecAggConfig, challenge: bytes, advertisement: bytes) -> bytes:
    """Bytes a client signs to say "this advertisement is my answer to *this* engine node's
    request": label, session id, round, the node's challenge, SHA-256 of the advertisement.

    The advertisement's own signature binds session, round and client id but not the channel
    it travels on, so a node could relay another client's valid advertisement and be bound to
    that client first. The server sends every node a fresh challenge and binds client u to
    node n only if u signed n's challenge over that very advertisement (a relayed one carries
    a signature over another node's challenge). Not a SecAgg transcript: the engine's
    (``protocols/engine-flower.md`` §3); every field has a fixed length.
    """
    if len(challenge) != NODE_CHALLENGE_BYTES:
        raise LocalProtocolError(f"node challenge must be {NODE_CHALLENGE_BYTES} bytes")
    return (
        NODE_BINDING_LABEL
        + config.session_id
        + struct.pack("<I", config.round_index)
        + challenge
        + hashlib.sha256(advertisement).digest()
    )


def kat_seed(label: str, u: int) -> bytes:
    """FOR KNOWN-ANSWER VECTORS AND TESTS ONLY: the 32-byte seed of party ``u``'s ``label``
    stream, SHA-256(``securefl/secagg/kat/v1/<label>/<u>``)."""
    return hashlib.sha256(f"securefl/secagg/kat/v1/{label}/{u}".encode()).digest()
