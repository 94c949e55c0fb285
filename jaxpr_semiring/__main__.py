"""``python -m jaxpr_semiring``: the command line (:mod:`jaxpr_semiring.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
