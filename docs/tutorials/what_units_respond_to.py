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
# # What do units and classes respond to?
#
# `stlens.visualize` does **activation maximization** for video networks, after Feichtenhofer, Pinz, Wildes and
# Zisserman (CVPR 2018 / IJCV 2019): it optimizes an input *video* so that a chosen class logit, channel or unit
# responds as strongly as possible, under regularizers that keep the video natural in space and set how fast it may
# change in time (λ_T, `temporal_reg`: large = slow videos). The result shows what a unit looks for — in space and in
# time.
#
# The model is the bundled `stlens:i3d` + `bundled:i3d-motion`, a small 3-D convnet trained on `synth:motion`, whose 8
# classes are the direction in which an object moves (east, north-east, north, …, counter-clockwise from east). Its
# clips are 16 frames of 64 × 64 px, so the optimization runs on a CPU: this notebook uses 48 steps per target (the
# default is 256; docs/visualize.md reports 150-step runs), enough to see the pattern, not a converged visualization.
# Every number printed comes from running this notebook.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import stlens

MODEL, WEIGHTS = "stlens:i3d", "bundled:i3d-motion"
STEPS = 48
RUNS = Path("runs/units")
FIGURES = Path("figures/what_units_respond_to")
FIGURES.mkdir(parents=True, exist_ok=True)


def show_frames(targets, every=2):
    """One row per target: every `every`-th frame of its optimized RGB video."""
    frames = [t.rgb[::every] for t in targets]
    fig, axes = plt.subplots(len(frames), len(frames[0]), figsize=(1.1 * len(frames[0]), 1.2 * len(frames)),
                             squeeze=False)
    for row, (target, clip) in enumerate(zip(targets, frames, strict=True)):
        for col, frame in enumerate(clip):
            axes[row, col].imshow(frame)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(target.name, rotation=0, ha="right", fontsize=8)
    for col in range(len(frames[0])):
        axes[0, col].set_title(f"t={col * every}", fontsize=7)
    fig.tight_layout()
    return fig


# %% [markdown]
# ## A class: what makes the model say "moving east"?
#
# The target `class:0,2,4,6` asks for four class logits (pre-softmax): east, north, west and south. They are optimized
# together in one batch, each from its own seed. `natural_clips=8` also evaluates each objective on 8 real test clips
# of the world the checkpoint was trained on, so the optimized value can be compared with what natural inputs reach
# (`÷ natural`: the ratio to their mean, `–` when that mean is not positive).

# %%
classes = stlens.visualize(MODEL, "class:0,2,4,6", weights=WEIGHTS, steps=STEPS, natural_clips=8, seed=0,
                           progress=False, out=RUNS / "classes", overwrite=True)
print(classes)

# %%
fig = show_frames(classes.targets)
fig.savefig(FIGURES / "classes.png")
plt.show()

# %% [markdown]
# Does the optimized video move in the class's direction? `stlens.visualize` estimates the optical flow of each
# optimized video with OpenCV (DIS) and records its mean direction (counter-clockwise from east, up = north) and
# speed. Class k of this world moves at 45·k degrees.

# %%
header = f"{'target':<9}{'class dir':>10}{'video dir':>11}{'error':>8}{'net px/frame':>14}{'mean |flow|':>13}"
print(header, "-" * len(header), sep="\n")
for target in classes.targets:
    k = int(target.name.split("_")[1])
    flow = target.stats["video_flow_opencv_dis"]
    error = abs((flow["direction_deg"] - 45 * k + 180) % 360 - 180)
    print(f"{target.name:<9}{45 * k:>9}°{flow['direction_deg']:>10.1f}°{error:>7.0f}°{flow['speed']:>14.2f}"
          f"{flow['mean_magnitude']:>13.2f}")

# %% [markdown]
# What to look for: a class whose video has a clear net motion (net px/frame close to the mean |flow|) and a small
# error is one the visualization explains. Expect only some classes to pass: docs/visualize.md finds, at 150 steps,
# 4 of the 8 classes within 45° of their direction, and shows that the logit can be driven high by local space-time
# patterns without one coherent motion — the model itself does prefer the right directions for coherent motion. Read
# the frames together with these numbers, not alone.

# %% [markdown]
# ## A unit: the most dynamic and the most static channels of a layer
#
# To pick units worth looking at, measure the model first: `stlens.measure` classes every channel as dynamic, static,
# joint or none (see the tutorial on measuring a model). `top-dynamic:K` then takes the K channels of the layer with
# the largest r_dynamic − r_static among the dynamic ones, `top-static:K` the reverse; `from_run=` names the
# measurement.

# %%
measured = stlens.measure(MODEL, "synth:motion?split=test&seed=11", weights=WEIGHTS, pairs=16, bootstrap=0,
                          seed=0, workers=0, progress=False, out=RUNS / "measure-motion", overwrite=True)
print(measured.table())

# %%
units = stlens.visualize(MODEL, ["top-dynamic:2", "top-static:2"], layers="stage3", from_run=RUNS / "measure-motion",
                         weights=WEIGHTS, steps=STEPS, natural_clips=8, seed=0, progress=False,
                         out=RUNS / "stage3", overwrite=True)
print(units)
for target in units.targets:
    m = target.measured
    print(f"{target.name}: {m['class']} (r_dynamic {m['r_dynamic']:.2f}, r_static {m['r_static']:.2f}); "
          f"frame-to-frame change {target.stats['frame_change_grey']:.1f} grey levels")

# %%
fig = show_frames(units.targets)
fig.savefig(FIGURES / "stage3_units.png")
plt.show()

# %% [markdown]
# What to look for: a dynamic unit's video should carry its pattern *through time* (structure that moves from frame
# to frame), a static unit's video a pattern that would read the same from any single frame. The frame-to-frame change
# measures only how much the pixels change, not whether they move coherently: compare the frames, and for a motion
# reading open the flow GIFs of the run folder (below).
#
# The objective's history shows whether the optimization has levelled off within the steps given:

# %%
fig, ax = plt.subplots(figsize=(5, 2.8))
for target in [*classes.targets, *units.targets]:
    history = np.asarray(target.history, dtype=float)
    ax.plot(history / max(abs(history[-1]), 1e-9), label=target.name, lw=1)
ax.set_xlabel("step")
ax.set_ylabel("objective / final value")
ax.legend(fontsize=6, ncol=2)
fig.tight_layout()
fig.savefig(FIGURES / "history.png")
plt.show()

# %% [markdown]
# ## The run folders
#
# With `out=`, every target gets a folder with its video (`video.gif`, `video.mp4`), its optical flow in the paper's
# display (`flow_paper.gif`) and on the colour wheel (`flow_wheel.gif`), and a `result.json` with the numbers above;
# `mosaic.png` shows all targets × frames and `summary.json` the settings. `stlens report runs/units` shows them as
# a unit gallery.

# %%
print(sorted(p.name for p in (RUNS / "classes").iterdir() if not p.name.startswith(".")))
print(sorted(p.name for p in (RUNS / "classes" / "class_2").iterdir()))

# %% [markdown]
# ## Going further
#
# - `temporal_reg=[0, 10, 100]` renders each target once per λ_T: how fast a unit's preferred pattern may change;
# - `target` also takes `neuron:C@t,y,x` (one unit at one position) and objectives composed in Python,
#   `stlens.visualize.objectives`: `obj.channel("stage3", 4) - 0.5 * obj.channel("stage3", 7)`;
# - two-stream models (`stlens:twostream` + `bundled:twostream-motion`) optimize an RGB video and a flow stack
#   together, and their flow shows the motion a class wants directly;
# - more steps (the default 256) give cleaner videos; on a GPU pass `device="cuda"`.
