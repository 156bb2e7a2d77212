"""Procedural videos with ground truth: textured objects moving over textured backgrounds, with per-pixel object
masks, ground-truth optical flow and full metadata; classes defined by motion, by appearance, by both (confounded)
or by motion alone with the object camouflaged. Open with ``open_synth("synth:motion?n=200")`` or
``stlens.open_data``; pairs for ``stlens.measure`` with ``SynthPairs`` or ``stlens.make_pairs``. ``task=segment``
(``synth.segment``) makes the object's mask the target, under a panning and zooming camera, with an optional
distractor and estimated optical flow; ``task=instances`` (``synth.instances``) renders several objects per clip
with classes, track ids and occlusion-correct masks (``core.instances.Instances``)."""

from stlens.synth.dataset import OPTIONS, SynthDataset, open_synth
from stlens.synth.instances import INSTANCE_WORLDS, InstanceClip
from stlens.synth.pairs import SynthPairs
from stlens.synth.render import SynthClip
from stlens.synth.textures import FAMILIES, TextureBank, texture_bank
from stlens.synth.worlds import DIRECTIONS, NUM_CLASSES, WORLDS

__all__ = ["DIRECTIONS", "FAMILIES", "INSTANCE_WORLDS", "NUM_CLASSES", "OPTIONS", "WORLDS", "InstanceClip", "SynthClip",
           "SynthDataset", "SynthPairs", "TextureBank", "open_synth", "texture_bank"]
