"""``make_pairs``: the pair maker for a source — the source's own (``source.make_pairs``: the synth dataset, whose
ideal stylizer is re-rendering) or one of the video pair makers (``VideoPairs``, ``StylizedPairs``,
``TwoStreamPairs``). Sources are never told apart by importing their types (see ``stlens.core.source``)."""

from __future__ import annotations

from stlens.core.source import ClipSource, PairSource
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.pairs.makers import VideoPairs
from stlens.pairs.stylized import StylizedPairs
from stlens.pairs.twostream import TwoStreamPairs
from stlens.video.source import video_source


def make_pairs(source: ClipSource, spec: InputSpec, pairs: int, stylizer: str | None = None, seed: int = 0,
               flow: str | None = None, flow_cache=None) -> PairSource:
    """Pairs for ``stlens.measure`` from a data source.

    A source with its own ``make_pairs`` (a ``synth:`` source, see ``stlens.synth.SynthPairs``) makes them itself;
    from a ``stylized:ROOT`` source the styles on disk make them (see ``StylizedPairs``); from other video sources see
    ``VideoPairs``.

    Args:
        source: the data source (``stlens.open_data``).
        spec: how clips are sampled and normalized (the model's ``InputSpec``).
        pairs: pairs per factor.
        stylizer: the appearance change; None: each source's default (``palette`` for videos, ``rerender`` — the
            clip rendered with new textures — for synthetic clips); unused for a ``stylized:`` source.
        seed: the seed of the pairs.
        flow: ``tvl1``, ``dis`` or ``farneback``: two-stream ``(rgb, flow)`` pairs (see ``TwoStreamPairs``; on synth
            sources the ground-truth flow is used whatever the method); None: RGB pairs.
        flow_cache: a ``FlowCache`` or a folder that caches the flow (None: no cache).

    Returns:
        An iterable of ``Pair`` (indexable for the video sources: ``len()``, ``pairs[k]``).

    Examples:
        >>> source = stlens.open_data("synth:motion?n=8&frames=4&size=16")
        >>> pairs = stlens.make_pairs(source, stlens.InputSpec(frames=4, size=16, resize=16), pairs=2)
        >>> [pair.factor for pair in pairs]
        [0, 1, 0, 1]
    """
    own = getattr(source, "make_pairs", None)
    if own is not None:
        return own(spec, pairs, stylizer=stylizer, seed=seed, flow=flow, flow_cache=flow_cache)
    source = video_source(source, "making pairs")
    stylizer = "palette" if stylizer is None else stylizer
    if flow is not None:
        if source.styles:
            raise StlensError("two-stream pairs from stylized: folders are not supported; use the videos themselves")
        return TwoStreamPairs(source, spec, pairs, stylizer, seed, flow_method=flow, cache=flow_cache)
    if source.styles:
        return StylizedPairs(source, spec, pairs, seed)
    return VideoPairs(source, spec, pairs, stylizer, seed)
