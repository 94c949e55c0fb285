"""The command line (``jaxpr-semiring``): :mod:`.commands` (argument parsing, the ``flows`` and
``top-path`` commands), :mod:`.dataset` (``flows --file``: data-set runs), :mod:`.dataset_flows`
(what one data-set record holds), :mod:`.render` (tables, heatmaps, HTML reports of a flows
document), :mod:`.loading` (checkpoint directories, tokenizers, target specs) and
:mod:`.errors` (:class:`UsageError`: exit code 2, one line).
"""

from .commands import main

__all__ = ["main"]
