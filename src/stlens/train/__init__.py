"""Training small video models (``stlens train``) with checkpoints for tracking the static/dynamic bias."""

from stlens._lazy import callable_package
from stlens.train.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from stlens.train.trainer import TrainConfig, Trainer
from stlens.train.verb import train
from stlens.video.labelled import LabelledClips, SynthClips, VideoClips, open_clips

__all__ = ["LabelledClips", "SynthClips", "TrainConfig", "Trainer", "VideoClips", "list_checkpoints",
           "load_checkpoint", "open_clips", "save_checkpoint", "train"]

callable_package(__name__, "stlens.train.verb:train")  # stlens.train(...) is the verb
