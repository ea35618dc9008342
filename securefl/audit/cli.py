"""``securefl audit …``: verify, check, report, account, anchor, keygen — built for CI.

Exit codes: 0 ok; 1 the ledger is invalid or the policy is violated; 2 usage or I/O error
(bad option, missing/unreadable file — a ledger that cannot be *read* is never reported
"INVALID" —, malformed policy, key or anchor log). Verification never trusts the key stored
in the ledger silently: pass ``--public-key`` (or say ``--trust-stored-key``); rollback is
detected with ``--anchors FILE`` (the anchor log) or ``--expect-head SEQ:HASH``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from securefl.errors import SecureFLError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

audit_app = typer.Typer(
    name="audit",
    help="Tamper-evident privacy ledger: verify, check against a policy, report, account.",
    no_args_is_help=True,
    add_completion=False,
)

LedgerArg = Annotated[Path, typer.Argument(help="ledger file (SQLite)")]
PublicKeyOpt = Annotated[
    Path | None, typer.Option("--public-key", "-k", help="expected signer (PEM or hex file)")
]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-stored-key", help="verify with the key stored in the ledger (weaker)"),
]
AnchorOpt = Annotated[
    str | None,
    typer.Option("--expect-head", help="published head anchor SEQ:HASH (detects rollback)"),
]
AnchorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--anchors",
        help="anchor log (JSON lines written by `securefl audit anchor` or at the end of a run):"
        " every anchor published for this ledger must be in it (detects rollback)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _usage(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _need_file(path: Path, what: str) -> None:
    if not path.is_file():
        _usage(f"{what} {path} does not exist or is not a file")


def _key_args(public_key: Path | None, trust: bool) -> Path | None:
    if public_key is None and not trust:
        _usage("pass --public-key (the expected signer) or --trust-stored-key")
    if public_key is not None:
        _need_file(public_key, "public key")
    return public_key


def _verify(
    ledger: Path, public_key: Path | None, anchor: str | None, anchors: Path | None = None
) -> Any:
    from securefl.audit.ledger import verify_ledger

    _need_file(ledger, "ledger")
    if anchors is not None:
        _need_file(anchors, "anchor log")
    try:
        return verify_ledger(ledger, public_key, expected_head=anchor, anchors=anchors)
    except SecureFLError as exc:
        _usage(str(exc))


def _report_anchor(ledger: Path, anchor: str | None, anchors: Path | None) -> str | None:
    """The anchor a report is verified against: ``--expect-head``, else the latest anchor
    published for this ledger in ``--anchors`` (a log without one is an error)."""
    if anchors is None:
        return anchor
    from securefl.audit.anchors import latest_anchor, read_anchors
    from securefl.audit.ledger import read_ledger_id

    _need_file(anchors, "anchor log")
    try:
        lid = read_ledger_id(ledger)
        latest = latest_anchor(read_anchors(anchors, ledger_id=lid))
    except SecureFLError as exc:
        _usage(str(exc))
    if latest is None:
        typer.echo(f"INVALID: {anchors} holds no anchor for ledger {lid}", err=True)
        raise typer.Exit(EXIT_FAIL)
    if anchor is not None and anchor.strip().lower() != latest.text:
        _usage("give --expect-head or --anchors, not both")
    return latest.text


def keygen(
    path: Annotated[Path, typer.Argument(help="private key file to create (PATH.pub beside it)")],
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Create an Ed25519 signing key (mode 0600) and its public key PATH.pub."""
    from securefl.audit.keys import fingerprint, load_public_key, write_keypair

    try:
        pub = write_keypair(path, overwrite=force)
    except SecureFLError as exc:
        _usage(str(exc))
    except OSError as exc:
        _usage(f"cannot write {path}: {exc.strerror}")
    typer.echo(f"signing key: {path}\npublic key:  {pub}")
    typer.echo(f"fingerprint: {fingerprint(load_public_key(pub))}")


def anchor(
    ledger: LedgerArg,
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    anchors: Annotated[
        Path | None,
        typer.Option(
            "--anchors",
            help="anchor log to append to (default: anchors.jsonl in the key directory)",
        ),
    ] = None,
    key_dir: Annotated[
        Path | None,
        typer.Option("--key-dir", help="key directory (default: $SECUREFL_KEY_DIR or ~/.config)"),
    ] = None,
) -> None:
    """Verify the ledger, then publish its head SEQ:HASH to the anchor log."""
    from securefl.audit.anchors import publish_anchor

    key = _key_args(public_key, trust_stored_key)
    result = _verify(ledger, key, None)
    if not result.ok:
        typer.echo("INVALID ledger: head not published", err=True)
        for e in result.errors:
            typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_FAIL)
    try:
        published = publish_anchor(result, anchor_log=anchors, key_dir=key_dir)
    except SecureFLError as exc:
        _usage(str(exc))
    typer.echo(f"published head anchor {published.text} of ledger {published.ledger_id}")


def verify(
    ledger: LedgerArg,
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    expect_head: AnchorOpt = None,
    anchors: AnchorsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every entry hash and the signed head; exit 1 if anything was tampered with.

    Read-only: nothing is written beside the ledger, so a copy on read-only media verifies.
    """
    key = _key_args(public_key, trust_stored_key)
    result = _verify(ledger, key, expect_head, anchors)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        status = "OK" if result.ok else "INVALID"
        typer.echo(f"{status}: {result.entries} entries, ledger {result.ledger_id}")
        if result.head is not None:
            typer.echo(f"head anchor: {result.head.anchor}")
            typer.echo(f"signer fingerprint: {result.head.key_fingerprint}")
        for e in result.errors:
            typer.echo(f"error: {e}")
        for w in result.warnings:
            typer.echo(f"warning: {w}")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAIL)


def _load_policy(policy: Path) -> Any:
    from securefl.audit.policy import BudgetPolicy

    _need_file(policy, "policy")
    try:
        return BudgetPolicy.load(policy)
    except SecureFLError as exc:
        _usage(f"invalid policy: {exc}")


def _is_node_policy(policy: Path) -> bool:
    """A node policy file says ``kind = "node"`` (protocols/engine-flower.md)."""
    import tomllib

    try:
        data = tomllib.loads(policy.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False  # the budget-policy loader reports the error
    return data.get("kind") == "node"


def node_check(
    ledger: LedgerArg,
    policy: Annotated[Path, typer.Option("--policy", "-p", help="node policy TOML")],
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    expect_head: AnchorOpt = None,
    anchors: AnchorsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a node's own ledger, then replay every contribution against a node policy
    (each run's ε and the total recomputed from the recorded DP events)."""
    from securefl.engine.node_policy import NodePolicy, check_node_ledger

    key = _key_args(public_key, trust_stored_key)
    _need_file(policy, "policy")
    try:
        pol = NodePolicy.load(policy)
    except SecureFLError as exc:
        _usage(f"invalid node policy: {exc}")
    result = _verify(ledger, key, expect_head, anchors)
    out: dict[str, Any] = {"ok": False, "verification": result.to_dict(), "node_policy": None}
    if result.ok:
        try:
            res = check_node_ledger(ledger, pol)
        except SecureFLError as exc:
            _usage(str(exc))
        out = {"ok": res.ok, "verification": result.to_dict(), "node_policy": res.to_dict()}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    elif not result.ok:
        typer.echo("INVALID ledger: node policy not evaluated")
        for e in result.errors:
            typer.echo(f"error: {e}")
    else:
        p = out["node_policy"]
        typer.echo(
            f"node policy {pol.name}: {'OK' if p['ok'] else 'VIOLATED'}"
            f" ({p['contributions']} contribution(s), {p['refusals']} refusal(s))"
        )
        for r in p["runs"]:
            eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.4g}"
            typer.echo(
                f"run {r['run_id']}: ε = {eps} at δ = {pol.delta_max:g} ({r['accountant']},"
                f" {r['charged_rounds']} rounds charged) — budget {pol.max_epsilon_per_run:g}"
            )
        total = "∞" if p["epsilon_total"] is None else f"{p['epsilon_total']:.4g}"
        typer.echo(f"total ε = {total} (basic composition) — budget {pol.max_epsilon_total:g}")
        for v in p["violations"]:
            typer.echo(f"violation: {v}")
        for w in p["warnings"]:
            typer.echo(f"warning: {w}")
    raise typer.Exit(EXIT_OK if out["ok"] else EXIT_FAIL)


def check(
    ledger: LedgerArg,
    policy: Annotated[
        Path, typer.Option("--policy", "-p", help="budget policy TOML (or a node policy)")
    ],
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    expect_head: AnchorOpt = None,
    anchors: AnchorsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the ledger, then evaluate it against a budget policy (ε recomputed).

    A node policy file (``kind = "node"``) checks a node's own ledger (as ``node-check``).
    """
    _need_file(policy, "policy")
    if _is_node_policy(policy):
        node_check(ledger, policy, public_key, trust_stored_key, expect_head, anchors, as_json)
    key = _key_args(public_key, trust_stored_key)
    pol = _load_policy(policy)
    result = _verify(ledger, key, expect_head, anchors)
    if not result.ok:
        out: dict[str, Any] = {"ok": False, "verification": result.to_dict(), "policy": None}
    else:
        try:
            res = pol.check(ledger)
        except SecureFLError as exc:
            _usage(str(exc))
        out = {"ok": res.ok, "verification": result.to_dict(), "policy": res.to_dict()}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    elif not result.ok:
        typer.echo("INVALID ledger: policy not evaluated")
        for e in result.errors:
            typer.echo(f"error: {e}")
    else:
        p = out["policy"]
        typer.echo(f"policy {pol.name}: {'OK' if p['ok'] else 'VIOLATED'}")
        for k, eps in p["epsilon"].items():
            shown = "∞" if eps is None else f"{eps:.4g}"
            typer.echo(
                f"ε[{k}] = {shown} at δ = {pol.delta:g} ({pol.accountant})"
                f" — budget {pol.max_epsilon:g}"
            )
        for v in p["violations"]:
            typer.echo(f"violation: {v}")
        for w in p["warnings"]:
            typer.echo(f"warning: {w}")
    raise typer.Exit(EXIT_OK if out["ok"] else EXIT_FAIL)


def report(
    ledger: LedgerArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="budget policy")] = None,
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    expect_head: AnchorOpt = None,
    anchors: AnchorsOpt = None,
    formats: Annotated[str, typer.Option("--formats", help="comma list: json,md,html")] = (
        "json,md,html"
    ),
    title: Annotated[str | None, typer.Option("--title")] = None,
    name: Annotated[str, typer.Option("--name", help="output file stem")] = "privacy_report",
    utility: Annotated[
        Path | None,
        typer.Option(
            "--utility",
            help="benchmark privacy-utility JSON (benchmarks/results/utility_bench.json) "
            "shown as a reference curve",
        ),
    ] = None,
) -> None:
    """Write JSON/Markdown/HTML reports; exit 1 if the ledger is invalid or policy violated."""
    from securefl.audit.report import build_report, write_html, write_json, write_markdown

    key = _key_args(public_key, trust_stored_key)
    pol = _load_policy(policy) if policy is not None else None
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    writers = {"json": write_json, "md": write_markdown, "html": write_html}
    bad = [f for f in wanted if f not in writers]
    if bad or not wanted:
        _usage(f"unknown format(s) {bad}; use json, md, html")
    _need_file(ledger, "ledger")
    expect_head = _report_anchor(ledger, expect_head, anchors)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _usage(f"cannot create {out}: {exc.strerror}")
    try:
        from securefl.audit.utility import utility_reference

        ref = utility_reference(utility) if utility is not None else None
        rep = build_report(
            ledger, pol, public_key=key, expected_head=expect_head, title=title, utility=ref
        )
    except SecureFLError as exc:
        _usage(str(exc))
    for f in wanted:
        path = writers[f](rep, out / f"{name}.{f}")
        typer.echo(f"wrote {path}")
    ok = rep["ledger"]["verification"]["ok"] and (rep["policy"] is None or rep["policy"]["ok"])
    raise typer.Exit(EXIT_OK if ok else EXIT_FAIL)


def account(
    ledger: LedgerArg,
    delta: Annotated[float, typer.Option("--delta", help="δ at which to report ε")] = 1e-5,
    adjacency: Annotated[str, typer.Option("--adjacency", help="add-remove|replace-one")] = (
        "add-remove"
    ),
    run: Annotated[str | None, typer.Option("--run", help="only this run id")] = None,
    public_key: PublicKeyOpt = None,
    trust_stored_key: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute ε under every accountant from the DP events recorded in the ledger."""
    from securefl.audit.ledger import read_entries
    from securefl.audit.spend import ACCOUNTANTS, charged_rounds, compose, epsilon

    key = _key_args(public_key, trust_stored_key)
    if adjacency not in ("add-remove", "replace-one"):
        _usage("--adjacency must be add-remove or replace-one")
    if not 0 < delta < 1:
        _usage("--delta must be in (0, 1)")
    result = _verify(ledger, key, None)
    if not result.ok:
        typer.echo("INVALID ledger: " + "; ".join(result.errors), err=True)
        raise typer.Exit(EXIT_FAIL)
    try:
        charged = charged_rounds(read_entries(ledger), run_id=run)
        event = compose([c.event for c in charged])
        eps = {a: epsilon(a, event, delta, adjacency) for a in ACCOUNTANTS}
    except SecureFLError as exc:
        typer.echo(f"cannot account: {exc}", err=True)
        raise typer.Exit(EXIT_FAIL) from exc
    out = {"rounds_charged": len(charged), "delta": delta, "adjacency": adjacency, "epsilon": eps}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        typer.echo(f"{len(charged)} rounds charged, δ = {delta:g}, {adjacency}")
        for a, e in eps.items():
            typer.echo(f"  {a}: " + ("unsupported" if e is None else f"ε = {e:.6g}"))


for _name, _fn in (
    ("keygen", keygen),
    ("verify", verify),
    ("anchor", anchor),
    ("check", check),
    ("node-check", node_check),
    ("report", report),
    ("account", account),
):
    audit_app.command(_name)(_fn)


def register(app: typer.Typer) -> None:
    """Attach ``securefl audit …`` to the main app."""
    app.add_typer(audit_app, name="audit")


if __name__ == "__main__":  # pragma: no cover
    audit_app(sys.argv[1:])
