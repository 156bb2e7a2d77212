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
# # Is my model static-biased?
#
# A video model is *static-biased* when it decides from what a scene looks like rather than from how things move.
# stlens answers the question three ways, and this notebook runs all three and puts them in one report:
#
# 1. **representation** — `stlens.measure`: how much of each layer encodes static and dynamic information;
# 2. **behaviour** — `stlens.perturb`: how much of the model's accuracy survives when the motion is taken away
#    (freeze, shuffle) or the appearance is changed or removed (palette, appearance-free), and
#    `stlens.perturb.dataset_report`: is the *dataset* static-biased;
# 3. **units** — `stlens.selectivity`: which units are class-specific, whether those are the dynamic or the static
#    ones, and a gallery of what the most selective ones look for.
#
# `stlens.report` then writes one self-contained HTML page over all of these runs.
#
# To learn to read the numbers we use two models whose answer is known: the bundled checkpoints of `stlens:i3d`, a
# small 3-D convnet, each trained on a synthetic world:
#
# - `bundled:i3d-motion` on `synth:motion`: 8 classes, the direction in which an object moves; the appearance says
#   nothing about the class;
# - `bundled:i3d-appearance` on `synth:appearance`: 8 classes told by the object's appearance.
#
# Both are tiny (16 frames of 64 × 64 px), so everything runs on a CPU in a minute or two. The sizes are small (16 pairs
# per factor, 64 test clips, 200 bootstrap resamples): the intervals are wide, and docs/behaviour.md and
# docs/selectivity.md give the same measurements at 256 and 128 clips. Every number printed comes from running this
# notebook.

# %%
import re
from html import unescape
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import stlens

RUNS = Path("runs/static_bias")   # every run folder of this notebook goes below this one
MODELS = {                         # world → bundled checkpoint of stlens:i3d trained on it
    "motion": "bundled:i3d-motion",
    "appearance": "bundled:i3d-appearance",
}
CLIPS = 64                         # test clips scored per model
PAIRS = 16                         # pairs per factor for the measurement
FIGURES = Path("figures/is_my_model_static_biased")
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Representation: `stlens.measure`
#
# Each model is measured on pairs from the test split of its own world (`seed=11`: other clips than the ones scored
# below). On a synth world a dynamic pair renders the same motion with new textures and a static pair shuffles the
# frames of one clip. The run folders are written with `out=` so that `perturb`, `selectivity` and `report` can read
# them.

# %%
measured = {}
for world, weights in MODELS.items():
    measured[world] = stlens.measure("stlens:i3d", f"synth:{world}?split=test&seed=11", weights=weights,
                                     pairs=PAIRS, bootstrap=200, seed=0, workers=0, progress=False,
                                     out=RUNS / f"measure-{world}", overwrite=True)
    print(f"== stlens:i3d + {weights} on synth:{world}")
    print(measured[world].table(), "\n")

# %% [markdown]
# What to look for: in the motion model the dynamic share should grow with depth and overtake the static share, with
# most channels of the deep layers classed *dynamic* (D in the units column) and the bias below 0; the appearance model
# should stay static-leaning at every depth. The figure puts the two side by side.

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
for world, result in measured.items():
    frame = result.to_frame()
    x = np.arange(len(frame))
    for factor, style in (("dynamic", "-o"), ("static", "--s")):
        low, high = frame[f"ci95_{factor}_low"], frame[f"ci95_{factor}_high"]
        ax.plot(x, frame[f"percent_{factor}"], style, label=f"{MODELS[world]}: {factor} %")
        ax.fill_between(x, low, high, alpha=0.15)
ax.set_xticks(x, frame["layer"])
ax.set_ylabel("% of the layer's dimensions")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(FIGURES / "representation.png")
plt.show()

# %% [markdown]
# ## 2. Behaviour: `stlens.perturb`
#
# Each model is scored on 64 clean test clips and on the same clips under four perturbations:
#
# | perturbation | removes | keeps |
# |---|---|---|
# | `freeze` | all motion (the middle frame repeated) | one frame's appearance |
# | `shuffle` | the frame order | every frame's appearance |
# | `palette` | the colours | motion, shapes, edges |
# | `appearance-free` | all appearance (noise carried along the clip's optical flow) | the motion |
#
# The **retention** is (score − chance) / (clean − chance): 1 means nothing was lost, 0 means the model is at chance.
# Each comes with a 95% bootstrap interval over clips. `from_run=` joins the measure run of the same model, so the
# perturb run records the per-layer dynamic and static % beside its retentions (and the report can plot one against
# the other).

# %%
behaviour = {}
for world, weights in MODELS.items():
    behaviour[world] = stlens.perturb("stlens:i3d", f"synth:{world}?split=test&n={CLIPS}", weights=weights,
                                      perturbations="freeze,shuffle,palette,appearance-free", bootstrap=200, seed=0,
                                      progress=False, from_run=RUNS / f"measure-{world}",
                                      out=RUNS / f"perturb-{world}", overwrite=True)
    print(f"== stlens:i3d + {weights} on synth:{world}?split=test&n={CLIPS}")
    print(behaviour[world].table(), "\n")

# %% [markdown]
# A model that reads motion falls to chance under freeze (retention near 0) and keeps its accuracy under palette and
# appearance-free; a static-biased model does the opposite. One row as a dict, and the joined representation:

# %%
for world, result in behaviour.items():
    freeze = result.row("freeze")
    print(f"{MODELS[world]}: freeze retention {freeze['retention']:.3f} "
          f"[{freeze['retention_lo']:.3f}, {freeze['retention_hi']:.3f}]")
print(sorted(behaviour["motion"].representation))

# %%
fig = behaviour["appearance"].plot()
fig.savefig(FIGURES / "perturb_appearance.png")
fig

# %% [markdown]
# ### Is the dataset static-biased? `stlens.perturb.dataset_report`
#
# The same perturb runs answer a question about the data: *does a model trained on it keep most of its score when the
# motion is taken away?* `dataset_report` reads the perturb runs of models trained on one dataset (here one model on
# `synth:appearance`; several models make the verdict sturdier) beside a **reference** run on a world that needs
# motion. A run is `static` when the lower bound of its freeze retention interval is ≥ 0.5, `dynamic` when the upper
# bound is < 0.5, `undecided` otherwise; the reference must itself come out `dynamic`.

# %%
dataset = stlens.perturb.dataset_report([RUNS / "perturb-appearance"], reference=RUNS / "perturb-motion",
                                        out=RUNS / "dataset-appearance", overwrite=True)
print(dataset.table())
print("verdict:", dataset.verdict, "| reference:", dataset.reference_verdict)

# %% [markdown]
# ## 3. Units: `stlens.selectivity` and its gallery
#
# `stlens.selectivity` passes labelled clips through the model and computes, for every channel, the class-selectivity
# index of Morcos et al. (0: responds alike to every class, 1: to one class only) with a bootstrap interval, and calls
# the channel *class-specific*, *generic* or *weak*. With `from_run=` the measure run's unit classes are joined, so the
# table also gives the mean index of the dynamic, static and joint units. `gallery=4` renders the four most selective
# units: each GIF shows the unit's top clips next to a short activation-maximization video of the channel
# (`gallery_steps` steps; a sketch, not a converged visualization — see the tutorial on what units respond to).

# %%
units = stlens.selectivity("stlens:i3d", f"synth:motion?split=test&n={CLIPS}", weights=MODELS["motion"],
                           from_run=RUNS / "measure-motion", bootstrap=200, seed=0, gallery=4, gallery_steps=16,
                           progress=False, out=RUNS / "selectivity-motion", overwrite=True)
print(units.table())

# %% [markdown]
# Read it from top to bottom: does the share of class-specific units grow with depth, and are the most selective units
# the dynamic ones (`dyn` in the last column)? The gallery lists its units with the class of their top clips:

# %%
last = units.layers[-1]
print(last)
for entry in units.gallery:
    layer, channel = units[entry["layer"]], entry["channel"]
    classes = sorted({units.classes[clip["class"]] for clip in entry["clips"]})
    print(f"{entry['gif']}: {layer.layer} channel {channel}, SI {layer.index[channel]:.2f} "
          f"[{layer.low[channel]:.2f}, {layer.high[channel]:.2f}], {layer.kinds[channel]}, "
          f"unit class {layer.unit_class[channel]}; top clips of classes {classes}")

# %%
gif = Image.open(RUNS / "selectivity-motion" / units.gallery[0]["gif"])
print("frames in the GIF:", gif.n_frames, "| size:", gif.size)
fig, axes = plt.subplots(2, 1, figsize=(8, 3.2))
for ax, index in zip(axes, (0, gif.n_frames // 2), strict=True):
    gif.seek(index)
    ax.imshow(gif.convert("RGB"))
    ax.set_title(f"frame {index}: top clips, then the unit's visualization", fontsize=8)
    ax.axis("off")
fig.savefig(FIGURES / "gallery_unit0.png")
plt.show()

# %% [markdown]
# ## 4. One report over every run: `stlens.report`
#
# `stlens.report` finds every run below the folders it is given (measure, perturb, dataset report, selectivity) and
# writes one self-contained HTML file (every image embedded, no network access). Besides a section per run it adds the
# comparisons across runs: static % against dynamic % of each measured model, and — because both perturb runs are
# joined to a measure run — the dynamic % of the last layer against the shuffle, appearance-free and palette
# retentions (with two runs Spearman's ρ is shown without an interval: it needs at least four). The same from the
# command line: `stlens report runs/static_bias --out runs/static_bias/report.html`.

# %%
html = stlens.report([RUNS], RUNS / "report.html", title="Is my model static-biased?")
text = html.read_text(encoding="utf-8")
print(html, f"{len(text) // 1024} KiB")
print("\n".join(unescape(title) for title in re.findall(r"<h2[^>]*>(.*?)</h2>", text)))

# %% [markdown]
# ## Your own model
#
# Replace `"stlens:i3d"` and the bundled weights with your model (a spec or an `nn.Module`), and the synth worlds with
# your labelled data (an annotation file such as a Kinetics CSV, or `classes:ROOT` with a folder per class; the
# perturbations need labels). For the dataset question, perturb several models trained on your dataset and keep a
# reference run of a model on data that needs motion.
