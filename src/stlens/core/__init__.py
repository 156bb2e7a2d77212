"""The bottom layer: types every other package shares, importing only torch, numpy and ``stlens.errors``.

``spec`` (``InputSpec``) · ``handle`` (``ModelHandle``, how many inputs a model takes, output layouts) · ``pair``
(``Pair`` and the pair operations) · ``source`` (the indexable clip-source protocol) · ``registry`` (model families and
data sources, as import strings: nothing is imported until it is used) · ``summary`` (how results print:
a short ``repr`` and escaped HTML). See docs/architecture.md.
"""
