"""The ``stlens`` command line: it parses options, calls the verb's Python function and prints.

Options come from shared groups, so that one option name means one thing in every verb (docs/cli.md; a test walks
every subparser). Errors raised inside the package name the Python argument in backticks (`` `batch_size` ``);
``main`` shows them with the option the user typed (``--batch-size``)."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from stlens._version import __version__
from stlens.errors import StlensError

FLOWS = ("auto", "none", "tvl1", "dis", "farneback")  # == stlens.measure.verb.FLOW_CHOICES (a test checks)
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
UNITS = ("video", "instance")  # == stlens.measure.units.UNITS (a test checks)
DEMO_OUT = "runs/demo"
_warned: set[str] = set()


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option (hidden from -h): it still works, and warns once with the new spelling."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string not in _warned:
            _warned.add(option_string)
            logging.getLogger("stlens").warning("%s is deprecated; use %s", option_string, self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)
        typed = dict(getattr(namespace, "typed", None) or {})
        namespace.typed = typed | {self.dest: option_string}  # errors name the option as the user typed it


class Removed(argparse.Action):
    """An option that no longer exists in this verb: an error naming its replacement."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} was removed from this command: use {self.new}")


def _alias(p, old: str, dest: str, new: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs)


# -- shared option groups: one name, one meaning ---------------------------------------------------------------------

def _model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, help="torchvision:<builder>, stlens:<zoo name>, pytorchvideo:<name>, "
                   "hf:<name | hub id | folder>[?options] or module:<pkg.mod>:<callable> (docs/models.md)")
    g.add_argument("--weights", default=None, help="a .safetensors/.pt file, bundled:<name> or a torchvision weights "
                   "name (downloaded into the torch hub cache unless --offline)")
    g.add_argument("--frames", type=int, default=None, metavar="N", help="frames per clip (default: the model's)")
    g.add_argument("--size", type=int, default=None, metavar="PIXELS", help="crop size (default: the model's)")
    g.add_argument("--offline", action="store_true", help="never download weights (also: STLENS_OFFLINE=1 or "
                   "HF_HUB_OFFLINE=1)")


def _data_option(p: argparse.ArgumentParser, required: bool = True, what: str = "") -> None:
    p.add_argument("--data", required=required, default=None, help=what or "a folder of videos / frame folders, a "
                   "video file, an annotation file, stylized:ROOT, sample: or synth:WORLD[?options]")


def _layers_option(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--layers", default=default, metavar="L1[,L2...]", help=what)
    _alias(p, "--layer", "layers", "--layers")


def _pair_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pairs")
    g.add_argument("--pairs", type=int, default=64, metavar="PAIRS", help="pairs per factor (default 64)")
    g.add_argument("--stylizer", default=None, help="appearance stylizer(s) of the pairs, NAME[,NAME...] (default "
                   "palette; on synth: worlds rerender, the same motion drawn with other textures)")
    g.add_argument("--flow", choices=FLOWS, default="auto", help="(rgb, flow) pairs for two-stream models from this "
                   "optical-flow method; auto (default): tvl1 for models whose forward takes two inputs (the "
                   "ground-truth flow on synth: worlds), none otherwise")
    g.add_argument("--flow-cache", default=None, metavar="FOLDER", help="folder to cache optical flow in")


def _compute_options(p: argparse.ArgumentParser, batch_unit: str, batch_default: int, workers_what: str,
                     workers_default: int | None = None, precision_note: str = "") -> None:
    g = p.add_argument_group("device, precision and workers")
    g.add_argument("--batch-size", type=int, default=batch_default, metavar=batch_unit.upper(),
                   help=f"{batch_unit} per forward pass (default {batch_default})")
    told = "min(4, CPUs − 1)" if workers_default is None else str(workers_default)
    g.add_argument("--workers", type=int, default=workers_default, metavar="N", help=f"processes that {workers_what} "
                   f"(default {told}; 0: the main process); results do not depend on it")
    g.add_argument("--device", default="auto", help="auto (default: CUDA when available, else the CPU), cpu, cuda, "
                   "cuda:K or mps")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default)"
                   f"{precision_note}; bf16: autocast on CPUs and CUDA GPUs; fp16: CUDA autocast; auto: bf16 where "
                   "the CPU/GPU has native bf16, else fp32")


def _stats_options(p: argparse.ArgumentParser, bootstrap: int, over: str, threshold: bool = True) -> None:
    p.add_argument("--bootstrap", type=int, default=bootstrap, metavar="N", help=f"bootstrap replicates over {over} "
                   f"for the 95%% CIs (default {bootstrap}; 0: none)")
    if threshold:
        p.add_argument("--threshold", type=float, default=0.5, help="per-channel class threshold τ (strict >; "
                       "default 0.5)")


def _seed_option(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--seed", type=_seed, default=0, help=what or "random seed (default 0)")


def _output_options(p: argparse.ArgumentParser, what: str, overwrite: str | None = "replace the run in --out (the "
                    "new run is swapped in only when complete)", required: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", required=required, default=None, help=what)
    if overwrite:
        g.add_argument("--overwrite", action="store_true", help=overwrite)
    g.add_argument("--quiet", action="store_true", help="no progress bar or table")


def _mask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-threshold", type=float, default=0.5, help="segmentation: a pixel is the object where "
                   "sigmoid(logit) > this (default 0.5; the paper's MoCA numbers use 0.2)")


def _iou_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iou", choices=["mask", "box"], default="mask", help="segmentation: IoU of the masks, or of boxes "
                   "as MoCA's evaluation (the box of the prediction's largest component vs the target's)")


def _model_kwargs(args: argparse.Namespace) -> dict:
    return {"weights": args.weights, "frames": args.frames, "size": args.size,
            "offline": True if args.offline else None}


def _compute_kwargs(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "workers": args.workers, "device": args.device,
            "precision": args.precision}


# -- the verbs ---------------------------------------------------------------------------------------------------

def cmd_measure(args: argparse.Namespace) -> int:
    import stlens
    from stlens.interrupts import EXIT_INTERRUPTED

    result = stlens.measure(
        args.model, args.data, args.layers, pairs=args.pairs, stylizer=args.stylizer, flow=args.flow,
        flow_cache=args.flow_cache, bootstrap=args.bootstrap, threshold=args.threshold, seed=args.seed,
        save_latents=args.save_latents, out=args.out, overwrite=args.overwrite,
        checkpoint_every_pairs=args.checkpoint_every_pairs, resume=args.resume, progress=not args.quiet,
        factors=args.factors, units=args.units, stylize_on=args.stylize_on, **_model_kwargs(args),
        **_compute_kwargs(args))
    if getattr(result, "path", None) is None:  # a rank other than 0 of a distributed run: rank 0 writes
        return 0
    if result.meta.get("interrupted"):
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(result.table())
        skipped = result.meta["skipped"]
        if skipped:
            print(f"skipped {len(skipped)} video(s): " + "; ".join(f"{s['source']}: {s['reason']}" for s in skipped))
        print(f"{result.meta['pairs']['dynamic']}+{result.meta['pairs']['static']} pairs in "
              f"{result.timing['seconds']:.1f} s on {result.meta['device']} ({result.meta['precision']}) → "
              f"{result.path}/result.json")
    return 0


def _add_measure_parser(sub) -> None:
    p = sub.add_parser("measure", help="static vs. dynamic information per layer and channel")
    _model_options(p)
    _data_option(p)
    _layers_option(p, "default", "L1,L2 | default | all (dotted named_modules paths; default: the model's)")
    _pair_options(p)
    p.add_argument("--factors", default="dynamic,static", metavar="NAME[,NAME...]", help="the factors measured: "
                   "dynamic,static (default), plus playback (the same content at two speeds) and speed (synth: "
                   "worlds: two clips at one speed, all else different); each further factor gets its dims "
                   "%% per layer and r_<factor> per unit, and changes the others' dims (docs/factors.md)")
    p.add_argument("--units", default="video", choices=UNITS, help="what one sample is: video (default; each layer "
                   "pooled per video, a VIS decoder layer over its queries) or instance (stlens:vis on an instance "
                   "source: per ground-truth track present in both videos of a pair, the embedding of the query "
                   "matched to it at each decoder layer; docs/vis.md)")
    _compute_options(p, "pairs", 4, "make the pairs (decode, stylize, flow) while the model runs")
    p.add_argument("--stylize-on", default="auto", choices=("auto", "device", "workers"), help="where the palette/"
                   "fourier styling and the frame shuffling of video pairs run: auto (default: the device on CUDA, "
                   "else the workers), device (batched torch operations where the model runs; the workers only "
                   "decode and crop) or workers (numpy); equal within float rounding (docs/scaling.md)")
    _stats_options(p, 200, "pairs")
    _seed_option(p)
    p.add_argument("--save-latents", action="store_true", help="also write latents.npz (memory grows with pairs)")
    _output_options(p, "the run folder (refused if it holds a complete run)")
    p.add_argument("--checkpoint-every-pairs", type=int, default=0, metavar="PAIRS", help="checkpoint into "
                   "OUT/.stlens-checkpoint every N pairs (per process) and when interrupted (SIGINT, SIGTERM); "
                   "default 0: no checkpoints")
    _alias(p, "--checkpoint-every", "checkpoint_every_pairs", "--checkpoint-every-pairs", type=int)
    p.add_argument("--resume", action="store_true", help="continue the measurement checkpointed in --out (the same "
                   "options; without a checkpoint it starts at the first pair)")
    p.set_defaults(func=cmd_measure)


def cmd_layers(args: argparse.Namespace) -> int:
    import stlens

    model = args.model or args.spec
    if model is None:
        raise StlensError("`model` is missing: stlens layers --model SPEC")
    print(stlens.layers(model, device=args.device, **_model_kwargs(args)))
    return 0


def _add_layers_parser(sub) -> None:
    p = sub.add_parser("layers", help="hookable layers with their output shapes (one dry run)")
    p.add_argument("spec", nargs="?", default=None, help=argparse.SUPPRESS)  # the 0.1 spelling: stlens layers SPEC
    _model_options(p, required=False)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:K or mps")
    p.set_defaults(func=cmd_layers)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stlens.train.evaluate import evaluate

    result = evaluate(args.model, args.data, clips=args.clips, mask_threshold=args.mask_threshold, iou=args.iou,
                      bootstrap=args.bootstrap, seed=args.seed, out=args.out, overwrite=args.overwrite,
                      progress=not args.quiet, **_model_kwargs(args), **_compute_kwargs(args))
    if not args.quiet:
        print(result.table())
        if args.out:
            print(f"→ {args.out}/evaluation.json")
    return 0


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="a model's task metric on labelled clips (top-1/top-5 accuracy; mIoU, mSR; "
                       "track AP)")
    _model_options(p)
    _data_option(p, what="labelled clips: synth:WORLD[?options], an annotation file with labels, classes:ROOT (a "
                 "folder per class), davis:/moca:; instance data (synth:WORLD?task=instances, ytvis:ROOT) for a VIS "
                 "model")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="the first N clips of --data (default all)")
    _mask_options(p)
    _iou_option(p)
    _compute_options(p, "clips", 16, "decode and prepare the clips", workers_default=0)
    _stats_options(p, 1000, "clips", threshold=False)
    _seed_option(p)
    _output_options(p, "the run folder (evaluation.json, evaluation.csv); default: print only", required=False)
    p.set_defaults(func=cmd_evaluate)


def cmd_selectivity(args: argparse.Namespace) -> int:
    import stlens

    result = stlens.selectivity(args.model, args.data, args.layers, clips=args.clips, bootstrap=args.bootstrap,
                                seed=args.seed, top_k=args.top_k, from_run=args.from_run, out=args.out,
                                overwrite=args.overwrite, progress=not args.quiet, gallery=args.gallery,
                                gallery_steps=args.gallery_steps, **_model_kwargs(args), **_compute_kwargs(args))
    if not args.quiet:
        print(result.table())
        if result.path is not None:
            print(f"{len(result.clip_ids)} clips in {result.timing['seconds']:.1f} s → {result.path}/selectivity.csv")
    return 0


def _add_selectivity_parser(sub) -> None:
    p = sub.add_parser("selectivity", help="class-specific and generic units: the class-selectivity index per "
                       "channel on labelled clips")
    _model_options(p)
    _data_option(p, what="labelled clips: synth:WORLD[?options], an annotation file with labels or classes:ROOT "
                         "(ROOT/<class>/<video>)")
    _layers_option(p, "default", "L1,L2 | default | all (dotted named_modules paths; default: the model's)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="the first N clips of --data (default all)")
    p.add_argument("--top-k", type=int, default=5, metavar="CLIPS", help="clips kept per unit with its highest "
                   "responses (default 5)")
    p.add_argument("--from", dest="from_run", default=None, help="a stlens measure run of the same model and layers: "
                   "join its unit class, r_dynamic and r_static per unit")
    p.add_argument("--gallery", type=int, default=4, metavar="UNITS", help="the most selective units written as GIFs "
                   "(gallery/unit<k>.gif: top clips | activation-maximization video of the channel); 0: none "
                   "(default 4)")
    p.add_argument("--gallery-steps", type=int, default=32, metavar="STEPS", help="visualization steps per unit of "
                   "--gallery (default 32)")
    _compute_options(p, "clips", 16, "decode and prepare the clips", workers_default=0)
    _stats_options(p, 200, "clips", threshold=False)
    _seed_option(p, "seeds the clips, the bootstrap and an untrained spec's weights (default 0)")
    _output_options(p, "the run folder (selectivity.csv, selectivity.json, class_means.npz, selectivity.png, "
                    "gallery/); default: print only", required=False)
    p.set_defaults(func=cmd_selectivity)


def cmd_explain(args: argparse.Namespace) -> int:
    import stlens

    target = int(args.target) if args.target.isdigit() else args.target
    result = stlens.explain(args.model, args.data, method=args.method, layer=args.layer, target=target,
                            clips=args.clips, steps=args.steps, seed=args.seed, out=args.out,
                            overwrite=args.overwrite, progress=not args.quiet, **_model_kwargs(args),
                            device=args.device, precision=args.precision, batch_size=args.batch_size,
                            errors=args.errors, error_steps=args.error_steps)
    if not args.quiet:
        print(repr(result))
        if result.path is not None:
            print(f"→ {result.path}/explain.csv")
    return 0


def _add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="what a prediction looks at, in space and time: attribution maps (Grad-CAM, "
                       "integrated gradients, saliency) with their temporal curve and static/dynamic split")
    _model_options(p)
    _data_option(p, what="labelled clips: synth:WORLD[?options] (masks give the mask share), an annotation file "
                 "with labels or classes:ROOT")
    p.add_argument("--method", choices=["gradcam", "ig", "saliency", "grad_x_input"], default="gradcam",
                   help="gradcam (default; at --layers), ig (integrated gradients), saliency or grad_x_input")
    p.add_argument("--layers", dest="layer", default=None, metavar="LAYER", help="gradcam's layer (a dotted "
                   "named_modules path; default: the model's last default layer)")
    p.add_argument("--target", default="predicted", help="the class explained: predicted (default), label or a "
                   "class number")
    p.add_argument("--clips", type=int, default=8, metavar="N", help="the first N clips of --data (default 8)")
    p.add_argument("--steps", type=int, default=16, metavar="STEPS", help="integrated-gradients steps (default 16)")
    p.add_argument("--errors", type=int, default=None, metavar="N", help="explain only the first N misclassified "
                   "clips, each with the class visualizations of its predicted and true class (out/errors/)")
    p.add_argument("--error-steps", type=int, default=32, metavar="STEPS", help="visualization steps per class "
                   "with --errors (default 32)")
    g = p.add_argument_group("device, precision and workers")
    g.add_argument("--batch-size", type=int, default=4, metavar="CLIPS", help="clips per attribution (default 4)")
    g.add_argument("--device", default="auto", help="auto (default: CUDA when available, else the CPU), cpu, cuda, "
                   "cuda:K or mps")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default); bf16: autocast on CPUs "
                   "and CUDA GPUs; fp16: CUDA autocast; auto: bf16 where the CPU/GPU has native bf16, else fp32")
    _seed_option(p, "seeds the shuffles, styles, clips and an untrained spec's weights (default 0)")
    _output_options(p, "the run folder (explain.csv, explain.json, attributions.npz, explain_clip<i>.gif); "
                    "default: print only", required=False)
    p.set_defaults(func=cmd_explain)


def cmd_train(args: argparse.Namespace) -> int:
    import stlens
    from stlens.core import distributed

    metrics = stlens.train(args.model, args.data, steps=args.steps, out=args.out, test_data=args.test_data,
                           checkpoint_every_steps=args.checkpoint_every_steps, lr=args.lr,
                           eval_clips=args.eval_clips, augment=args.augment, task=args.task,
                           mask_threshold=args.mask_threshold, static_dropout=args.static_dropout,
                           random_dropout=args.random_dropout, seed=args.seed, overwrite=args.overwrite,
                           tensorboard=args.tensorboard, progress=not args.quiet, **_model_kwargs(args),
                           **_compute_kwargs(args))
    if not args.quiet and distributed.launched().rank == 0:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"step {metrics.get('step')}: {shown} → {args.out}")
    return 0


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on labelled clips (synth: worlds or annotation files)")
    _model_options(p)
    _data_option(p, what="synth:WORLD[?options] or a labelled source (annotation file, classes:ROOT)")
    p.add_argument("--test-data", default="auto", help="held-out data (default auto: a synth world's test split; "
                   "none: no test score)")
    p.add_argument("--steps", type=int, required=True, metavar="STEPS", help="optimizer steps")
    p.add_argument("--checkpoint-every-steps", type=int, default=0, metavar="STEPS", help="also save step 0 and every "
                   "K steps (default 0: the final step only)")
    _alias(p, "--checkpoint-every", "checkpoint_every_steps", "--checkpoint-every-steps", type=int)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (warm-up, cosine decay)")
    p.add_argument("--eval-clips", type=int, default=256, help="clips for the train/test score at each checkpoint "
                   "(0: no evaluation)")
    p.add_argument("--augment", action="store_true", help="random crops (video sources; default off)")
    p.add_argument("--task", choices=["classify", "segment", "instances"], default="classify", help="classify "
                   "(cross-entropy; accuracy), segment (per-frame masks: BCE + soft-IoU loss; mIoU and mSR; needs a "
                   "segmentation model such as stlens:avos and masks, e.g. synth:motion?task=segment) or instances "
                   "(instance tracks: Hungarian matching, class + BCE + dice loss; matched-track IoU; needs "
                   "stlens:vis and an instance source, e.g. synth:motion?task=instances)")
    _mask_options(p)
    p.add_argument("--static-dropout", default=None, metavar="SPEC", help="StaticDropout after a layer: "
                   "LAYER:p=0.5:select=static|topk:K:every=E[:start=S][:pairs=N][:threshold=T] (channels re-selected "
                   "every E steps by measuring the current model on the training data; E=0: once at step S)")
    p.add_argument("--random-dropout", default=None, metavar="SPEC", help="the control: the same SPEC, the same "
                   "number of channels and p, channels drawn at random at the same schedule")
    _compute_options(p, "clips", 16, "make the pairs of the --static-dropout/--random-dropout measurements (the "
                     "training batches are read in the main process)", precision_note=" (fp16 with a GradScaler; "
                     "a resumed run keeps the precision, the device may change)")
    _seed_option(p)
    _output_options(p, "the run folder (an incomplete run there is resumed from its last checkpoint)",
                    overwrite="remove the earlier train run in --out (the files its run marker lists) and train anew")
    _tensorboard_option(p, "each metrics.jsonl line (train/loss, train/acc, train/lr, eval/train_acc, eval/test_acc "
                        "…)")
    p.set_defaults(func=cmd_train)


def cmd_track(args: argparse.Namespace) -> int:
    from stlens.train.tracking import track

    result = track(args.model, args.checkpoints, args.data, args.layers, pairs=args.pairs, stylizer=args.stylizer,
                   frames=args.frames, size=args.size, bootstrap=args.bootstrap, threshold=args.threshold,
                   seed=args.seed, out=args.out, overwrite=args.overwrite, progress=not args.quiet,
                   tensorboard=args.tensorboard, **_compute_kwargs(args))
    if not args.quiet and result is not None and getattr(result, "path", args.out):
        print(result.table())
        print(f"→ {args.out}/track.csv, track.json, track_<layer>.png")
    return 0


def _add_track_parser(sub) -> None:
    p = sub.add_parser("track", help="the static/dynamic bias of every checkpoint of a training run (same pairs)")
    p.add_argument("--model", required=True, help="the run's model spec (e.g. stlens:i3d)")
    p.add_argument("--frames", type=int, default=None, metavar="N", help="frames per clip (default: the run's)")
    p.add_argument("--size", type=int, default=None, metavar="PIXELS", help="crop size (default: the run's)")
    p.add_argument("--checkpoints", required=True, help="a `stlens train` run folder or its checkpoints/ folder; a "
                   "folder of Lightning .ckpt files; a Hugging Face Trainer output folder (checkpoint-N/)")
    _data_option(p, what="data for the pairs (as for measure)")
    _layers_option(p, "default", "L1,L2 | default | all")
    p.add_argument("--pairs", type=int, default=64, metavar="PAIRS", help="pairs per factor, the same for every "
                   "checkpoint (default 64)")
    p.add_argument("--stylizer", default=None, help="as for measure")
    _compute_options(p, "pairs", 4, "make the pairs (decode, stylize, flow)")
    _stats_options(p, 200, "pairs")
    _seed_option(p)
    _output_options(p, "the run folder: track.csv, track.json, track_<layer>.png")
    _tensorboard_option(p, "the tracked percentages (stlens/<layer>/dynamic, static, residual, bias)")
    p.set_defaults(func=cmd_track)


def _tensorboard_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--tensorboard", default=None, metavar="DIR", help=f"also write TensorBoard event files into DIR: "
                   f"{what} (needs the tensorboard package: pip install 'stlens[tensorboard]')")


def cmd_stylize(args: argparse.Namespace) -> int:
    from stlens.core import distributed
    from stlens.pairs.stylize import stylize

    counts = stylize(args.data, stylizer=args.stylizer, styles=args.styles, out=args.out, seed=args.seed,
                     short_side=args.short_side, frames_max=args.frames_max, device=args.device,
                     precision=args.precision, workers=args.workers, overwrite=args.overwrite,
                     progress=not args.quiet)
    if not args.quiet and distributed.launched().rank == 0:
        print(f"{counts['written']} video(s) written ({counts['frames']} frames), {counts['skipped']} already done, "
              f"{len(counts['bad'])} skipped → {args.out}")
        for bad in counts["bad"]:
            print(f"  skipped {bad['source']}: {bad['reason']}")
    return 0


def _add_stylize_parser(sub) -> None:
    from stlens.video.io import MAX_FRAMES

    p = sub.add_parser("stylize", help="write K styles of every video as ROOT/style_k/<video>/frame_00001.jpg")
    _data_option(p, what="a folder of videos / frame folders, a video file, an annotation file, or sample:")
    p.add_argument("--stylizer", default="fourier", help="NAME[,NAME...]: style k uses name (k-1) mod count "
                   "(default fourier)")
    p.add_argument("--styles", type=int, default=4, help="number of styles K (default 4, as in the paper)")
    _seed_option(p)
    p.add_argument("--frames-max", type=int, default=MAX_FRAMES, metavar="N", help=f"frames per video (default "
                   f"{MAX_FRAMES})")
    p.add_argument("--short-side", type=int, default=None, metavar="PIXELS", help="resize so that the short side has "
                   "this many pixels (default: as decoded)")
    p.add_argument("--size", action=Removed, new="--short-side", help=argparse.SUPPRESS)
    _neural_options(p)
    _output_options(p, "the output root (resumed: videos already written are skipped)",
                    overwrite="remove the earlier stylize run in --out (the video folders stylize.json records) first")
    p.set_defaults(func=cmd_stylize)


def _neural_options(p: argparse.ArgumentParser) -> None:
    """--device, --precision and --workers of the stylizers (only neural and neural-fast run a model)."""
    g = p.add_argument_group("device, precision and workers")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="processes that each stylize whole videos "
                   "with the CPU stylizers (default min(4, CPUs − 1); 0: the main process); results do not depend "
                   "on it")
    g.add_argument("--device", default="auto", help="the neural stylizers' device: auto (default: CUDA when "
                   "available, else the CPU), cpu, cuda, cuda:K or mps; the other stylizers and the optical flow run "
                   "on the CPU")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the neural stylizers' networks (neural's "
                   "VGG16, neural-fast's): fp32 (default); bf16; fp16 (CUDA); auto: bf16 where native on a GPU, fp32 "
                   "on a CPU")


def cmd_pairs_check(args: argparse.Namespace) -> int:
    from stlens.pairs.check import check_pairs
    from stlens.pairs.quality import report_table

    report = check_pairs(args.data, stylizer=args.stylizer, clips=args.clips, frames=args.frames, size=args.size,
                         check_flow=args.check_flow, seed=args.seed, examples=args.example_gifs, device=args.device,
                         precision=args.precision, workers=args.workers, out=args.out, progress=not args.quiet)
    if not args.quiet and report is not None:
        print(report_table(report))
        print(f"→ {args.out}")
    return 0


def _add_pairs_parser(sub) -> None:
    p = sub.add_parser("pairs", help="pair-maker tools")
    pairs_sub = p.add_subparsers(dest="pairs_command", required=True)
    c = pairs_sub.add_parser("check", help="flow kept? appearance changed? flicker added? (JSON report + table)")
    _data_option(c, what="videos to check on (folder, file, annotation, sample:)")
    c.add_argument("--stylizer", default="palette,fourier,npr", help="NAME[,NAME...] (default palette,fourier,npr)")
    c.add_argument("--clips", type=int, default=8, metavar="N", help="number of clips to check (default 8)")
    _alias(c, "--pairs", "clips", "--clips", type=int)
    _alias(c, "--n", "clips", "--clips", type=int)
    c.add_argument("--frames", type=int, default=16, metavar="N", help="frames per clip (default 16)")
    c.add_argument("--size", type=int, default=112, metavar="PIXELS", help="crop size (default 112)")
    c.add_argument("--check-flow", choices=["tvl1", "dis", "farneback"], default="dis", help="the optical flow that "
                   "checks the pairs (default dis)")
    _alias(c, "--flow", "check_flow", "--check-flow", choices=["tvl1", "dis", "farneback"])
    _seed_option(c)
    c.add_argument("--example-gifs", action="store_true", help="also write example GIFs (original | style A | style "
                   "B) into a folder named after --out")
    _alias(c, "--examples", "example_gifs", "--example-gifs", nargs=0)
    _neural_options(c)
    _output_options(c, "the report's JSON file", overwrite=None)
    c.set_defaults(func=cmd_pairs_check)


def cmd_report(args: argparse.Namespace) -> int:
    import stlens

    out = stlens.report(args.runs, args.out, layers=args.layers, examples=args.examples, title=args.title,
                        plots_only=args.plots_only)
    if args.plots_only:
        print(f"{len(out)} files (PNG + SVG) → {sorted({str(p.parent) for p in out})}")
    else:
        print(f"→ {out}")
    return 0


def _add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report (plots, pairs, tracks, unit gallery) of runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="stlens measure folders (nested ones are found, e.g. "
                   "the demo root), stlens ablate, track and visualize folders")
    p.add_argument("--out", default=None, help="the HTML file (default report.html); with --plots-only a folder "
                   "(default: RUN_DIR/plots)")
    p.add_argument("--plots-only", action="store_true", help="write the figures as PNG + SVG instead of HTML")
    _layers_option(p, None, "the layer(s) to compare models at: the first of them a run has (default: each run's "
                   "last)")
    p.add_argument("--examples", type=int, default=2, metavar="N", help="example pairs per factor shown as GIFs "
                   "(0 = none)")
    p.add_argument("--title", default="stlens report")
    p.set_defaults(func=cmd_report)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _seed(text: str) -> int:
    """A --seed value: an integer in [0, 2**63) (checked when the arguments are parsed, before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {value}")
    return value


def cmd_visualize(args: argparse.Namespace) -> int:
    import stlens

    if not args.quiet:
        logging.getLogger("stlens").setLevel(logging.INFO)
    result = stlens.visualize(args.model, args.target, layers=args.layers, weights=args.weights, frames=args.frames,
                              size=args.size, from_run=args.from_run, steps=args.steps, lr=args.lr, param=args.param,
                              temporal_reg=args.temporal_reg, batch_size=args.batch_size, precision=args.precision,
                              seed=args.seed, optimizer=args.optimizer, data=args.data,
                              natural_clips=args.natural_clips, device=args.device, out=args.out,
                              overwrite=args.overwrite, progress=not args.quiet)
    from stlens.core import distributed

    if args.quiet or distributed.launched().rank != 0:
        return 0
    for t in result.targets:
        nat = t.natural["mean"] if t.natural else float("nan")
        print(f"{t.name:<24} λ_T={t.temporal_reg:<6g} objective {t.value:10.3f}  natural mean {nat:8.3f}  "
              f"frame change {t.stats['frame_change_grey']:6.2f}  {t.status}")
    print(f"→ {args.out}")
    return 0


def _add_visualize_parser(sub) -> None:
    p = sub.add_parser("visualize", help="activation maximization: videos (and flow) that a unit or class responds to")
    _model_options(p)
    _layers_option(p, None, "layer(s) of channel/neuron/top-* targets (dotted named_modules paths; several: the "
                   "targets in each)")
    p.add_argument("--target", required=True, help="class:0-7 | channel:0-15 | neuron:C[@t,y,x] | top-dynamic:K | "
                   "top-static:K | top-joint:K")
    p.add_argument("--from", dest="from_run", default=None, help="a stlens measure run (folder or its result.json) "
                   "for top-* targets")
    p.add_argument("--steps", type=int, default=256, metavar="STEPS", help="optimization steps (default 256)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--param", choices=["pixel", "fourier"], default="fourier", help="input parameterization")
    p.add_argument("--optimizer", choices=["adam", "mv"], default="adam", help="adam, or mv: momentum + AdaGrad-like "
                   "update of Mahendran & Vedaldi")
    p.add_argument("--temporal-reg", type=_floats, default=[1.0], help="λ_T, or a sweep L1,L2,... (one result each; "
                   "large = slow, small = fast; default 1)")
    _compute_options(p, "targets", 8, "are not used by visualize", precision_note=" (TF32 off on GPUs)")
    _alias(p, "--batch", "batch_size", "--batch-size", type=int)
    _seed_option(p, "target i starts from seed + i (default 0)")
    _data_option(p, required=False, what="natural clips for the comparison (default: the synth world of a zoo model, "
                 "sample: otherwise)")
    p.add_argument("--natural-clips", type=int, default=8, metavar="N", help="natural clips to compare with (0: none)")
    _output_options(p, "the run folder")
    p.set_defaults(func=cmd_visualize)


def cmd_ablate(args: argparse.Namespace) -> int:
    import stlens

    result = stlens.ablate(args.model, args.data, args.from_run, args.layers, args.select, args.k, mode=args.mode,
                           draws=args.draws, clips=args.clips, seed=args.seed, bootstrap=args.bootstrap,
                           mask_threshold=args.mask_threshold, iou=args.iou, progress=not args.quiet, out=args.out,
                           overwrite=args.overwrite, meta={"arguments": _recorded(args)},
                           **_model_kwargs(args), **_compute_kwargs(args))
    if not args.quiet:
        print(result.table())
        print(f"{result.settings['clips']} clips, {result.timing['forwards']} forwards in "
              f"{result.timing['seconds']:.1f} s on {result.settings['device']} ({result.settings['precision']}) → "
              f"{result.path}/ablation.csv")
    return 0


def _recorded(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "options", "typed")}


def _add_ablate_parser(sub) -> None:
    p = sub.add_parser("ablate", help="mask the units a measure run ranks dynamic/static/joint (or random controls) "
                       "and score the model on labelled clips")
    _model_options(p)
    _data_option(p, what="labelled clips: synth:WORLD[?options], an annotation file with labels or classes:ROOT "
                 "(instance data — synth:WORLD?task=instances, ytvis:ROOT — for a VIS model, scored by track AP); "
                 "evaluate on other clips than those measured (e.g. a synth world's split=test, seed=…)")
    p.add_argument("--from", dest="from_run", required=True, help="the stlens measure run (folder, result.json or "
                   "units.csv) whose units.csv ranks the channels")
    _layers_option(p, None, "L1,L2 (default: every layer of --from)")
    p.add_argument("--select", default="dynamic,static,random", help="comma-separated: dynamic, static, joint, "
                   "random, random-least-dynamic, random-least-static (default dynamic,static,random)")
    p.add_argument("--k", type=_floats, default=[10.0, 25.0, 50.0, 75.0, 90.0], help="percentages of the layer's "
                   "channels to mask, in (0, 100] (default 10,25,50,75,90)")
    p.add_argument("--mode", default="zero", help="zero (Kowal et al.), mean (each masked channel set to its mean in "
                   "the unmasked pass) or zero,mean (default zero)")
    p.add_argument("--draws", type=int, default=5, help="draws of each random selection (default 5)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="the first N clips of --data (default all)")
    _mask_options(p)
    _iou_option(p)
    _compute_options(p, "clips", 16, "decode and prepare the clips", workers_default=0)
    _stats_options(p, 1000, "clips", threshold=False)
    _seed_option(p, "seeds the random draws, the clips and the bootstrap (default 0)")
    _output_options(p, "the run folder (refused if it holds a complete run)")
    p.set_defaults(func=cmd_ablate)


def cmd_perturb(args: argparse.Namespace) -> int:
    import stlens
    from stlens.core import distributed

    if args.runs is not None:
        return _dataset_report(args)
    if args.reference is not None or args.freeze_threshold is not None:
        given = "--reference" if args.reference is not None else "--freeze-threshold"
        raise StlensError(f"`{given}` belongs to --dataset-report RUN [RUN ...]")
    for name in ("model", "data"):
        if getattr(args, name) is None:
            raise StlensError(f"`--{name}` is required (or --dataset-report RUN [RUN ...] to judge a dataset by "
                              f"perturb runs)")
    result = stlens.perturb(args.model, args.data, perturbations=args.perturbations, clips=args.clips,
                            seed=args.seed, bootstrap=args.bootstrap, from_run=args.from_run,
                            progress=not args.quiet, out=args.out,
                            overwrite=args.overwrite, meta={"arguments": _recorded(args)},
                            **_model_kwargs(args), **_compute_kwargs(args))
    if not args.quiet and distributed.launched().rank == 0:  # torchrun: every rank has the result, rank 0 prints
        print(result.table())
        where = f" → {result.path}/perturb.csv" if result.path is not None else ""
        print(f"{result.settings['clips']} clips, {result.timing['forwards']} forwards in "
              f"{result.timing['seconds']:.1f} s on {result.settings['device']} ({result.settings['precision']})"
              f"{where}")
    return 0


def _dataset_report(args: argparse.Namespace) -> int:
    """``stlens perturb --dataset-report RUN [RUN ...]``: judge a dataset by perturb runs of models trained on it."""
    from stlens.perturb.dataset import THRESHOLD, dataset_report

    scoring = {"--model": args.model, "--data": args.data, "--weights": args.weights, "--from": args.from_run}
    given = [option for option, value in scoring.items() if value is not None]
    if given:
        raise StlensError(f"`{given[0]}` does not go with --dataset-report, which reads perturb runs (no model runs)")
    threshold = THRESHOLD if args.freeze_threshold is None else args.freeze_threshold
    report = dataset_report(args.runs, reference=args.reference, freeze_threshold=threshold, out=args.out,
                            overwrite=args.overwrite)
    if not args.quiet:
        print(report.table())
        if report.path is not None:
            print(f"→ {report.path}/dataset.csv")
    return 0


def _add_perturb_parser(sub) -> None:
    p = sub.add_parser("perturb", help="score a classifier, segmenter or VIS model on labelled clips clean "
                       "and with motion removed or appearance changed: drop and retention with CIs "
                       "(docs/behaviour.md); with --dataset-report, judge a dataset by such runs")
    _model_options(p, required=False)
    _data_option(p, required=False,
                 what="labelled clips: synth:WORLD[?options], an annotation file with labels or classes:ROOT")
    g = p.add_argument_group("dataset report (reads perturb runs; scores no model)")
    g.add_argument("--dataset-report", dest="runs", nargs="+", default=None, metavar="RUN",
                   help="perturb run folders of models trained on one dataset, each with freeze and shuffle: "
                   "is the dataset static-biased? (dataset.csv/json/png in --out; docs/behaviour.md)")
    g.add_argument("--reference", default=None, metavar="RUN", help="with --dataset-report: a perturb run on a "
                   "world that needs dynamics (e.g. bundled:i3d-motion on synth:motion), shown beside the dataset")
    g.add_argument("--freeze-threshold", type=float, default=None, metavar="RETENTION",
                   help="with --dataset-report: the freeze retention that separates static from dynamic (default "
                   "0.5)")
    p.add_argument("--perturbations",
                   default="shuffle,freeze,reverse,stride,palette,fourier,npr,appearance-free,static-mix",
                   metavar="P1[,P2...]", help="comma-separated: shuffle, freeze, reverse, stride, palette, fourier, "
                   "npr, appearance-free, static-mix (the default); also neural (slow), background-only, object-only "
                   "(need masks or a synth: world)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="the first N clips of --data (default all)")
    p.add_argument("--from", dest="from_run", default=None, help="a stlens measure run of the same "
                   "model and weights: its per-layer dynamic / static %% join perturb.json (docs/behaviour.md)")
    _compute_options(p, "clips", 16, "decode and prepare the clips", workers_default=0)
    _stats_options(p, 1000, "clips", threshold=False)
    _seed_option(p, "seeds the clips, the shuffles, styles and static-mix donors, and the bootstrap (default 0)")
    _output_options(p, "the run folder (perturb.csv, perturb.json, perturb.png); default: print only",
                    required=False)
    p.set_defaults(func=cmd_perturb)


def cmd_demo(args: argparse.Namespace) -> int:
    from stlens.showcase import demo_table, run_demo, verdicts

    if args.segmentation:
        return _demo_segmentation(args)
    if args.steps is not None:
        raise StlensError("--steps belongs to stlens demo --segmentation (the visualized units' optimization)")
    print("stlens demo: the bundled checkpoints (trained in the synthetic world) measured on synthetic pairs and on "
          "the real sample videos", flush=True)
    out = args.out or DEMO_OUT
    rows = run_demo(out, pairs=args.pairs, progress=not args.quiet)
    if not rows:
        raise StlensError("no bundled checkpoint found: run make checkpoints")
    print(demo_table(rows))
    for line in verdicts(rows):
        print("- " + line)
    print(f"→ {out}/summary.md, {out}/report.html")
    return 0


def _demo_segmentation(args: argparse.Namespace) -> int:
    from stlens.showcase import DemoRow, demo_table
    from stlens.showcase.segmentation import SEGMENT_MODELS, run_segmentation_demo, visual_table

    steps = 128 if args.steps is None else args.steps
    if steps < 1 or args.pairs < 2:
        raise StlensError(f"stlens demo --segmentation needs --steps ≥ 1 and --pairs ≥ 2, got {steps} and {args.pairs}")
    out = args.out or f"{DEMO_OUT}-segmentation"
    print(f"stlens demo: the bundled segmenters ({', '.join(SEGMENT_MODELS)}) measured on held-out pairs of the "
          f"DAVIS analogue and visualized", flush=True)
    summary = run_segmentation_demo(out, pairs=args.pairs, steps=steps, progress=not args.quiet)
    rows = [DemoRow(**r) for r in summary["rows"] if r["layer"].startswith("fusion.")]
    print(demo_table(rows))
    print(visual_table(summary["visualized"]))
    print(f"→ {out}/summary.md, {out}/report.html")
    return 0


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="measure the bundled models on synthetic pairs and the real sample videos")
    p.add_argument("--out", default=None, help=f"default {DEMO_OUT} ({DEMO_OUT}-segmentation with --segmentation)")
    p.add_argument("--pairs", type=int, default=64, metavar="PAIRS", help="pairs per factor for each model and data "
                   "(default 64)")
    p.add_argument("--segmentation", action="store_true", help="the bundled segmenters instead: every stream and "
                   "fusion stage measured, units of fusion.stage3 visualized (RGB + flow optimized together)")
    p.add_argument("--steps", type=int, default=None, metavar="STEPS", help="with --segmentation: optimization steps "
                   "per unit (default 128)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stlens", description="What do video networks encode, in space and time?")
    parser.add_argument("--version", action="version", version=f"stlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_measure_parser, _add_layers_parser, _add_evaluate_parser, _add_train_parser, _add_track_parser,
                _add_stylize_parser, _add_pairs_parser, _add_report_parser, _add_visualize_parser, _add_ablate_parser,
                _add_perturb_parser, _add_selectivity_parser, _add_explain_parser, _add_demo_parser):
        add(sub)
    for p in subparsers(parser):
        p.set_defaults(options=option_names(p))
    return parser


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command parser under ``parser``, nested ones included (``pairs check``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *subparsers(child)]
    return found


#: Python arguments whose option is not ``--`` + the name with dashes, or another verb's spelling of them.
ARGUMENT_OPTIONS = {"units": "--from", "from_run": "--from", "layer": "--layers", "n": "--clips", "spec": "--model",
                    "checkpoint_every": "--checkpoint-every-pairs"}


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python argument (an option's ``dest``) → the option a user types in this command."""
    names = dict(ARGUMENT_OPTIONS)
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.help != argparse.SUPPRESS:
            names[action.dest] = longs[0]
    return names


def as_options(message: str, names: dict[str, str]) -> str:
    """A package error with its Python arguments (`` `batch_size` ``) written as this command's options."""
    return re.sub(r"`([a-z_][a-z0-9_]*)`", lambda m: names.get(m[1], m[0]), message)


class _Stderr(logging.Handler):
    """The package's log lines on the current ``sys.stderr`` (looked up at each line), as ``stlens: LEVEL: …`` with
    Python arguments written as this command's options."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def emit(self, record: logging.LogRecord) -> None:
        print(f"stlens: {record.levelname}: {as_options(record.getMessage(), self.names)}", file=sys.stderr,
              flush=True)


def _log_to_stderr(names: dict[str, str]) -> None:
    log = logging.getLogger("stlens")
    for handler in [h for h in log.handlers if isinstance(h, _Stderr)]:
        log.removeHandler(handler)
    log.addHandler(_Stderr(names))
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    _warned.clear()  # an old spelling warns once per command
    _log_to_stderr({})
    args = build_parser().parse_args(argv)
    _log_to_stderr(args.options | (getattr(args, "typed", None) or {}))
    from stlens.interrupts import EXIT_INTERRUPTED, Interrupted, handle_signals
    from stlens.models.offline import offline_scope

    try:  # --offline holds for the whole command (visualize and worker processes included)
        with handle_signals(), offline_scope(True if getattr(args, "offline", False) else None):
            return args.func(args)
    except StlensError as exc:
        names = args.options | (getattr(args, "typed", None) or {})
        print(f"stlens: error{_rank_label()}: {as_options(str(exc), names)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"stlens: interrupted ({name}){_rank_label()}; nothing more was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _rank_label() -> str:
    """`` (rank R of W)`` in a process of a distributed run (torchrun), else empty."""
    from stlens.core import distributed

    try:
        label = distributed.launched().label
    except StlensError:
        return ""
    return f" ({label})" if label else ""


if __name__ == "__main__":
    raise SystemExit(main())
