"""Regenerate (or check) ``secagg_round.json``, the known-answer vector of one SecAgg+ round.

Usage: ``python protocols/vectors/generate_secagg_round.py`` writes the file;
``--check`` recomputes it and exits non-zero if it differs. Logic: ``securefl.secagg.kat``.
"""

from __future__ import annotations

import argparse
import json
import sys

from securefl.secagg.kat import VECTOR_PATH, compute_round_vector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    vector = compute_round_vector()
    if args.check:
        same = json.loads(VECTOR_PATH.read_text()) == vector
        print("secagg_round.json matches" if same else "secagg_round.json DIFFERS")
        return 0 if same else 1
    VECTOR_PATH.write_text(json.dumps(vector, indent=1) + "\n")
    print(f"wrote {VECTOR_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
