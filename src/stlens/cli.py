"""The ``stlens`` command line: it only parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from stlens._version import __version__
from stlens.errors import StlensError


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option (hidden from --help): it still works, and warns with the new spelling."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        logging.getLogger("stlens").warning("%s is deprecated; use %s", option_string, self.new)
        setattr(namespace, self.dest, values)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="torchvision:<builder>, stlens:<zoo name>, pytorchvideo:<name>, "
                   "hf:<videomae|timesformer|vivit>[?options] or module:<pkg.mod>:<callable> (docs/models.md)")
    p.add_argument("--weights", default=None, help="a .safetensors/.pt file, bundled:<name> or a torchvision "
                   "weights name")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model family's)")
    p.add_argument("--size", type=int, default=None, help="crop size in pixels (default: the model family's)")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available, else the CPU), cpu, cuda, "
                   "cuda:K or mps")


def _add_precision_arg(p: argparse.ArgumentParser, recorded: str, what: str = "") -> None:
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default="fp32", help="fp32 (default on "
                   f"every machine){what}; bf16: autocast on CPUs and CUDA GPUs; fp16: CUDA autocast; auto: bf16 "
                   f"where the CPU/GPU has native bf16, else fp32 ({recorded} records the one used)")


def _add_workers_arg(p: argparse.ArgumentParser, what: str = "make the pairs (decode, stylize, flow)",
                     default: int | None = None) -> None:
    told = "min(4, CPUs − 1)" if default is None else str(default)
    p.add_argument("--workers", type=int, default=default, help=f"processes that {what} (default: {told}; "
                   "0: in the main process); the result does not depend on it")


def _resolved_device(args: argparse.Namespace) -> tuple[torch.device, str]:
    """(device, precision) of --device and --precision, checked (StlensError, exit 2, naming the option)."""
    from stlens.measure.run import resolve_precision
    from stlens.models.registry import resolve_device

    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def _check_device(args: argparse.Namespace) -> None:
    """--device (and --precision on it) checked before any work: a StlensError (exit 2) names the option."""
    from stlens.models.registry import resolve_device

    device = resolve_device(args.device)
    if "precision" in args:
        from stlens.measure.run import resolve_precision

        resolve_precision(args.precision, device)


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--data", required=True, help="a folder of videos / frame folders, a video file, an annotation "
                   "file, stylized:ROOT, sample: or synth:WORLD[?options]")
    p.add_argument("--layers", default="default", help="L1,L2 | default | all (dotted named_modules paths)")
    p.add_argument("--pairs", type=int, default=64, help="pairs per factor (default 64)")
    p.add_argument("--stylizer", default=None, help="appearance stylizer(s) for the pairs, NAME[,NAME...] (default "
                   "palette; on synth: worlds rerender, the same motion drawn with other textures)")
    p.add_argument("--flow", choices=["auto", "none", "tvl1", "dis", "farneback"], default="auto",
                   help="(rgb, flow) pairs for two-stream models, flow from this method; auto: tvl1 for models whose "
                   "forward takes two inputs (ground-truth flow on synth: worlds), none otherwise")
    p.add_argument("--flow-cache", default=None, help="folder to cache optical flow in (reused across runs)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per forward pass (2× videos)")
    _add_workers_arg(p, "make the pairs (decode, stylize, flow) while the model runs")
    _add_device_arg(p)
    _add_precision_arg(p, "result.json")
    p.add_argument("--bootstrap", type=int, default=200, help="Poisson bootstrap replicates (0 = no CIs)")
    p.add_argument("--threshold", type=float, default=0.5, help="per-channel class threshold τ (strict >)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--save-latents", action="store_true", help="also write latents.npz (memory grows with pairs)")
    p.add_argument("--out", required=True, help="output run folder (refused if it holds a complete run)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (swapped in only when the new "
                   "run is complete)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N", help="save a checkpoint in "
                   "OUT/.stlens-checkpoint every N pairs (per process) and when interrupted (SIGINT, SIGTERM); "
                   "default 0: no checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the measurement checkpointed in --out (the same "
                   "options; without a checkpoint it starts at the first pair)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")


def cmd_measure(args: argparse.Namespace) -> int:
    from stlens.core import distributed

    world = distributed.launched()
    args.device = distributed.rank_device(args.device, world)
    _check_device(args)
    if args.checkpoint_every < 0:
        raise StlensError(f"--checkpoint-every must be ≥ 0 (pairs; 0: no checkpoints), got {args.checkpoint_every}")
    from stlens.models.registry import resolve_device

    with distributed.joined(resolve_device(args.device)) as world:
        folder = _claim_measure_out(args, world)  # before any work: only rank 0 claims; every rank hears of a refusal
        try:
            return _measure_into(folder, args, world)
        except BaseException:
            if folder is not None:
                folder.abandon()
            raise


def _checkpoint_folder(args: argparse.Namespace) -> Path:
    from stlens.measure import checkpoint

    return Path(args.out) / checkpoint.FOLDER


def _claim_measure_out(args: argparse.Namespace, world):
    """Rank 0 (the only process of a single run) claims --out and checks that no checkpoint would be lost; in a
    distributed run every rank learns whether that went well (and stops with rank 0's error if not)."""
    from stlens.core import distributed
    from stlens.measure import checkpoint
    from stlens.runs import RunFolder

    def claim():
        folder = RunFolder(args.out, "measure", overwrite=args.overwrite).claim()
        try:
            checkpoint.refuse_unless_resuming(_checkpoint_folder(args), args.resume)
        except StlensError:
            folder.abandon()
            raise
        return folder

    return distributed.on_first_rank(world, claim)


def _measure_into(folder, args: argparse.Namespace, world) -> int:
    import stlens
    from stlens.measure import checkpoint
    from stlens.measure.run import resolve_workers

    args.workers = workers = resolve_workers(args.workers)  # checked before any work; config.json records it
    torch.manual_seed(args.seed)
    handle = stlens.load_model(args.model, args.weights, frames=args.frames, size=args.size, device=args.device)
    from stlens.models.inspect import random_init, random_init_warning

    untrained = random_init(handle) and world.rank == 0  # (every rank builds the same weights from --seed)
    if untrained:
        print(f"stlens: WARNING: {random_init_warning(handle)}", file=sys.stderr, flush=True)
    source = stlens.open_data(args.data)
    pairs = stlens.make_pairs(source, handle.input, args.pairs, stylizer=args.stylizer, seed=args.seed,
                              flow=_flow_method(args.flow, handle), flow_cache=args.flow_cache)
    result = stlens.measure(
        handle, pairs, args.layers, batch_size=args.batch_size, precision=args.precision, device=args.device,
        bootstrap=args.bootstrap, threshold=args.threshold, seed=args.seed, save_latents=args.save_latents,
        progress=not args.quiet, meta={"data": args.data}, workers=workers,
        checkpoint=_checkpoint_folder(args) if args.checkpoint_every or args.resume else None,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
    )
    if folder is None:  # a rank other than 0 of a distributed run: rank 0 writes
        return 0
    config = result.config | {"arguments": {k: v for k, v in vars(args).items() if k != "func"}}
    if result.meta.get("interrupted"):
        return _save_interrupted(result, config, folder)
    out = result.save(folder, config)
    checkpoint.remove(_checkpoint_folder(args))  # the result is complete: its checkpoint is of no more use
    if not args.quiet:
        print(result.table())
        skipped = result.meta["skipped"]
        if skipped:
            print(f"skipped {len(skipped)} video(s): " + "; ".join(f"{s['source']}: {s['reason']}" for s in skipped))
        print(f"{result.meta['pairs']['dynamic']}+{result.meta['pairs']['static']} pairs in "
              f"{result.timing['seconds']:.1f} s on {result.meta['device']} ({result.meta['precision']}) → "
              f"{out}/result.json")
        if untrained:
            print(f"stlens: WARNING: {random_init_warning(handle)}", file=sys.stderr)
    return 0


def _save_interrupted(result, config: dict, folder) -> int:
    """An interrupted measurement: its partial result goes into ``--out`` only when that holds no complete run,
    otherwise into a fresh folder beside it; exit code 130."""
    from stlens.interrupts import EXIT_INTERRUPTED
    from stlens.runs import fresh_sibling

    pairs = result.meta["pairs"]["dynamic"] + result.meta["pairs"]["static"]
    earlier = folder.previous is not None and folder.previous.get("status") == "complete"
    if earlier:
        folder.abandon()
        folder = fresh_sibling(folder.out, ".interrupted")
    out = result.save(folder, config)
    kept = f"; the complete earlier run in {config['arguments']['out']} is unchanged" if earlier else ""
    arguments = config["arguments"]
    if arguments.get("checkpoint_every") or arguments.get("resume"):
        kept += f"; checkpoint saved: continue with --resume --out {arguments['out']}"
    print(f"stlens: interrupted after {pairs} pairs: partial result in {out}{kept}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _flow_method(choice: str, handle) -> str | None:
    from stlens.core.handle import takes_two_inputs

    if choice == "auto":
        return "tvl1" if takes_two_inputs(handle.module) else None
    return None if choice == "none" else choice


def cmd_layers(args: argparse.Namespace) -> int:
    import stlens
    from stlens.models.inspect import describe_layers

    _check_device(args)
    handle = stlens.load_model(args.spec, args.weights, frames=args.frames, size=args.size, device=args.device)
    print(describe_layers(handle))
    return 0


DEMO_OUT = "runs/demo"


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


def cmd_train(args: argparse.Namespace) -> int:
    from stlens.core import distributed
    from stlens.measure.run import resolve_workers
    from stlens.models.registry import resolve_device
    from stlens.train import TrainConfig, train

    _check_device(args)  # before any work
    resolve_workers(args.workers)
    device = resolve_device(distributed.rank_device(args.device, distributed.launched()))  # torchrun: one GPU each
    config = TrainConfig(model=args.model, data=args.data, steps=args.steps, out=args.out, weights=args.weights,
                         test_data=None if args.test_data == "none" else args.test_data,
                         checkpoint_every=args.checkpoint_every, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, eval_clips=args.eval_clips, augment=args.augment, frames=args.frames,
                         size=args.size, static_dropout=args.static_dropout, random_dropout=args.random_dropout,
                         device=args.device, precision=args.precision, workers=args.workers, task=args.task,
                         mask_threshold=args.mask_threshold)
    config.validate()  # every option checked before any work
    with distributed.joined(device) as world:  # under torchrun: data-parallel; rank 0 claims --out and writes
        metrics = train(config, progress=not args.quiet)
    if not args.quiet and world.rank == 0:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"step {metrics.get('step')}: {shown} → {args.out}")
    return 0


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on labelled clips (synth: worlds or annotation files)")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="synth:WORLD[?options] or a labelled source (annotation file)")
    p.add_argument("--test-data", default="auto", help="held-out data (default auto: a synth world's test split; "
                   "none: no test accuracy)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save step 0 and every K steps (default 0: "
                   "the final step only)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (warm-up, cosine decay)")
    p.add_argument("--eval-clips", type=int, default=256, help="clips for train/test accuracy at each checkpoint "
                   "(0: no evaluation)")
    p.add_argument("--augment", action="store_true", help="random crops (video sources; default off)")
    p.add_argument("--task", choices=["classify", "segment"], default="classify", help="classify (cross-entropy; "
                   "accuracy) or segment (per-frame masks: BCE + soft-IoU loss; mIoU and mSR; needs a segmentation "
                   "model such as stlens:avos and masks, e.g. synth:motion?task=segment)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="segment: a pixel is the object where "
                   "sigmoid(logit) > this (default 0.5; the paper's MoCA numbers use 0.2)")
    p.add_argument("--static-dropout", default=None, metavar="SPEC", help="StaticDropout after a layer: "
                   "LAYER:p=0.5:select=static|topk:K:every=E[:start=S][:pairs=N][:threshold=T] (channels re-selected "
                   "every E steps by measuring the current model on the training data; E=0: once at step S)")
    p.add_argument("--random-dropout", default=None, metavar="SPEC", help="the control: the same SPEC, the same "
                   "number of channels and p, channels drawn at random at the same schedule")
    _add_device_arg(p)
    _add_precision_arg(p, "config.json", " (fp16 with a GradScaler; a resumed run keeps the precision, the device "
                       "may change)")
    _add_workers_arg(p, "make the pairs of the --static-dropout/--random-dropout measurements (the training batches "
                     "are read in the main process)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, help="run folder (resumes from its last checkpoint)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def _claim_run(args: argparse.Namespace, verb: str, world):
    """Rank 0 (the only process of a single run) claims --out for a new run of ``verb`` before any work; in a
    distributed run every rank learns whether that went well (and stops with rank 0's error if not). None on the
    other ranks."""
    from stlens.core import distributed
    from stlens.runs import RunFolder

    return distributed.on_first_rank(world, lambda: RunFolder(args.out, verb, overwrite=args.overwrite).claim())


def cmd_track(args: argparse.Namespace) -> int:
    from stlens.core import distributed
    from stlens.measure.run import resolve_workers
    from stlens.models.registry import resolve_device
    from stlens.train.tracking import track

    world = distributed.launched()
    args.device = distributed.rank_device(args.device, world)
    _check_device(args)  # before any work
    resolve_workers(args.workers)
    with distributed.joined(resolve_device(args.device)) as world:
        run = _claim_run(args, "track", world)  # torchrun: the ranks split the checkpoints, rank 0 writes
        try:
            result = track(args.model, args.checkpoints, args.data, args.layers, pairs=args.pairs,
                           stylizer=args.stylizer, frames=args.frames, size=args.size, batch_size=args.batch_size,
                           bootstrap=args.bootstrap, threshold=args.threshold, seed=args.seed,
                           progress=not args.quiet, device=args.device, precision=args.precision,
                           workers=args.workers)
            if run is not None:
                result.save(run.staging)
                run.commit()
        except BaseException:
            if run is not None:
                run.abandon()
            raise
    if run is None:  # a rank other than 0 of a distributed run
        return 0
    out = run.out
    if not args.quiet:
        print(result.table())
        print(f"→ {out}/track.csv, track.json, track_<layer>.png")
    return 0


def _add_track_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="the static/dynamic bias of every checkpoint of a training run (same pairs)")
    p.add_argument("--model", required=True, help="the run's model spec (e.g. stlens:i3d)")
    p.add_argument("--checkpoints", required=True, help="a `stlens train` run folder or its checkpoints/ folder")
    p.add_argument("--data", required=True, help="data for the pairs (as for measure)")
    p.add_argument("--layers", default="default", help="L1,L2 | default | all")
    p.add_argument("--pairs", type=int, default=64, help="pairs per factor, the same for every checkpoint")
    p.add_argument("--stylizer", default=None, help="as for measure")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the run's)")
    p.add_argument("--size", type=int, default=None, help="crop size (default: the run's)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    _add_workers_arg(p)
    _add_device_arg(p)
    _add_precision_arg(p, "track.json's meta")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the CIs")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, help="output run folder: track.csv, track.json, track_<layer>.png")
    p.add_argument("--overwrite", action="store_true", help="replace the track run in --out (when complete)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_track)


def _stylizer_device(args: argparse.Namespace) -> tuple[torch.device, str, torch.device | None]:
    """(device, precision, device of the process group) of stylize and pairs check, checked before any work; under
    torchrun the neural stylizer's cuda/auto means cuda:LOCAL_RANK, and the group uses NCCL only for it."""
    from stlens.core import distributed
    from stlens.video.stylizers import uses_device

    on_device = uses_device(args.stylizer)
    if on_device:
        args.device = distributed.rank_device(args.device, distributed.launched())
    device, precision = _resolved_device(args)
    if args.precision == "auto" and device.type == "cpu":
        # the optimisation through VGG16 in bf16 autocast measured 5.8x slower than fp32 on a CPU with AVX512_BF16
        # (73 vs 12.5 s per frame, 8 frames at 128 px): auto keeps fp32 on the CPU for the neural stylizer
        precision = "fp32"
    return device, precision, device if on_device else None


def cmd_stylize(args: argparse.Namespace) -> int:
    from stlens.core import distributed
    from stlens.measure.run import exact_fp32, resolve_workers
    from stlens.pairs.stylize import stylize_source

    device, precision, group_device = _stylizer_device(args)  # before any work
    workers = resolve_workers(args.workers)
    # under torchrun: rank 0 claims ROOT and writes stylize.json, each rank writes its share of the videos
    with distributed.joined(group_device) as world, exact_fp32(precision == "fp32"):
        counts = stylize_source(args.data, args.stylizer, args.styles, args.out, seed=args.seed,
                                short_side=args.short_side, max_frames=args.frames_max, progress=not args.quiet,
                                device=device, precision=precision, workers=workers)
    if not args.quiet and world.rank == 0:
        print(f"{counts['written']} video(s) written ({counts['frames']} frames), {counts['skipped']} already done, "
              f"{len(counts['bad'])} skipped → {args.out}")
        for bad in counts["bad"]:
            print(f"  skipped {bad['source']}: {bad['reason']}")
    return 0


def _add_stylize_parser(sub: argparse._SubParsersAction) -> None:
    from stlens.video.io import MAX_FRAMES

    p = sub.add_parser("stylize", help="write K styles of every video as ROOT/style_k/<video>/frame_00001.jpg")
    p.add_argument("--data", required=True, help="a folder of videos / frame folders, a video file, an annotation "
                   "file, or sample:")
    p.add_argument("--stylizer", default="fourier", help="NAME[,NAME...]: style k uses name (k-1) mod count")
    p.add_argument("--styles", type=int, default=4, help="number of styles K (default 4, as in the paper)")
    p.add_argument("--out", required=True, help="output root (resumes: written videos are skipped)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--frames-max", type=int, default=MAX_FRAMES, help=f"frames per video (default {MAX_FRAMES})")
    p.add_argument("--short-side", type=int, default=None, help="resize so that the short side has this many "
                   "pixels (default: as decoded)")
    p.add_argument("--size", type=int, dest="short_side", action=DeprecatedAlias, new="--short-side",
                   help=argparse.SUPPRESS)
    _add_neural_device_args(p, "stylize.json")
    _add_workers_arg(p, "each decode, stylize and write whole videos (CPU stylizers; the neural stylizer runs in the "
                     "main process, on its device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_stylize)


def _add_neural_device_args(p: argparse.ArgumentParser, recorded: str) -> None:
    """--device and --precision of the neural stylizer (the only stylizer that runs a model)."""
    p.add_argument("--device", default="auto", help="the neural stylizer's device: auto (default: CUDA when "
                   "available, else the CPU), cpu, cuda, cuda:K or mps; the other stylizers (palette, fourier, npr, "
                   "identity, module:) and the optical flow are numpy/OpenCV and run on the CPU")
    _add_precision_arg(p, recorded, " of the neural stylizer's VGG16")


def cmd_pairs_check(args: argparse.Namespace) -> int:
    import stlens
    from stlens.core import distributed
    from stlens.files import write_json
    from stlens.measure.run import exact_fp32, resolve_workers
    from stlens.pairs.quality import check_pairs, report_table
    from stlens.runs import own_file

    device, precision, group_device = _stylizer_device(args)  # before any work
    workers = resolve_workers(args.workers)
    out = Path(args.out)
    if out.is_dir():
        raise StlensError(f"--out is the report's JSON file, but {out} is a folder; use e.g. {out / 'pairs.json'}")
    # under torchrun: rank 0 checks --out and writes the report, each rank checks its share of the clips
    with distributed.joined(group_device) as world:
        distributed.on_first_rank(world, lambda: own_file(out, '"flow_method"', "pairs check report"))
        if args.pairs < 1:
            raise StlensError(f"--pairs must be ≥ 1 (the number of clips to check), got {args.pairs}")
        if args.examples and out.suffix.lower() != ".json":
            raise StlensError(f"--out {out}: with --examples, --out must end in .json (the example GIFs go into the "
                              f"folder of the same name without .json); use e.g. {out.with_name(out.name + '.json')}")
        with exact_fp32(precision == "fp32"):
            report = check_pairs(stlens.open_data(args.data), args.stylizer, n=args.pairs, frames=args.frames,
                                 size=args.size, flow_method=args.flow, seed=args.seed,
                                 examples_dir=out.with_suffix("") if args.examples else None,
                                 progress=not args.quiet, device=device, precision=precision, workers=workers)
    if world.rank != 0:
        return 0
    write_json(out, report)
    if not args.quiet:
        print(report_table(report))
        print(f"→ {out}")
    return 0


def _add_pairs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pairs", help="pair-maker tools")
    pairs_sub = p.add_subparsers(dest="pairs_command", required=True)
    c = pairs_sub.add_parser("check", help="flow kept? appearance changed? flicker added? (JSON report + table)")
    c.add_argument("--data", required=True, help="videos to check on (folder, file, annotation, sample:)")
    c.add_argument("--stylizer", default="palette,fourier,npr", help="NAME[,NAME...] (default palette,fourier,npr)")
    c.add_argument("--pairs", type=int, default=8, help="number of clips to check (default 8)")
    c.add_argument("--n", type=int, dest="pairs", action=DeprecatedAlias, new="--pairs", help=argparse.SUPPRESS)
    c.add_argument("--frames", type=int, default=16)
    c.add_argument("--size", type=int, default=112)
    c.add_argument("--flow", choices=["tvl1", "dis", "farneback"], default="dis", help="flow method (default dis)")
    c.add_argument("--seed", type=_seed, default=0)
    c.add_argument("--examples", action="store_true", help="also write example GIFs (original | style A | style B) "
                   "into a folder named after --out")
    _add_neural_device_args(c, "the report")
    _add_workers_arg(c, "each check whole clips (flows, stylizing, metrics) with the CPU stylizers; the neural "
                     "stylizer's clips are checked in the main process")
    c.add_argument("--out", required=True, help="report JSON file")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_pairs_check)


def cmd_report(args: argparse.Namespace) -> int:
    from stlens.report import build_report, write_plots

    if args.plots_only:
        written = write_plots(args.runs, args.out, layer=args.layer)
        print(f"{len(written)} files (PNG + SVG) → {sorted({str(p.parent) for p in written})}")
        return 0
    from stlens.runs import own_file

    own_file(args.out or "report.html", '<meta name="generator" content="stlens', "report")
    out = build_report(args.runs, args.out or "report.html", layer=args.layer, examples=args.examples,
                       title=args.title)
    print(f"→ {out}")
    return 0


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report (plots, pairs, tracks, unit gallery) of runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="stlens measure folders (nested ones are found, e.g. "
                   "the demo root), stlens ablate, track and visualize folders")
    p.add_argument("--out", default=None, help="the HTML file (default report.html); with --plots-only a folder "
                   "(default: RUN_DIR/plots)")
    p.add_argument("--plots-only", action="store_true", help="write the figures as PNG + SVG instead of HTML")
    p.add_argument("--layer", default=None, help="the layer to compare models at (default: each run's last)")
    p.add_argument("--examples", type=int, default=2, help="example pairs per factor shown as GIFs (0 = none)")
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
    from stlens.core import distributed
    from stlens.models.registry import resolve_device
    from stlens.visualize.api import save_shared, visualize

    world = distributed.launched()
    args.device = distributed.rank_device(args.device, world)
    _check_device(args)  # before any work
    if not args.quiet:
        logging.getLogger("stlens").setLevel(logging.INFO)
    torch.manual_seed(args.seed)  # before the model is built: an untrained model's weights follow --seed
    with distributed.joined(resolve_device(args.device)) as world:
        run = _claim_run(args, "visualize", world)  # torchrun: the ranks split the targets, rank 0 commits
        try:
            result = visualize(args.model, args.target, layer=args.layer, weights=args.weights,
                               from_run=args.from_run, steps=args.steps, lr=args.lr, param=args.param,
                               temporal_reg=args.temporal_reg, batch_size=args.batch_size, precision=args.precision,
                               seed=args.seed, optimizer=args.optimizer, data=args.data,
                               natural_clips=args.natural_clips, frames=args.frames, size=args.size,
                               progress=not args.quiet, device=args.device)
        except BaseException:
            if run is not None:
                run.abandon()
            raise
        save_shared(result, run, distributed.Group(world) if world.distributed else None)
    if run is None:  # a rank other than 0 of a distributed run
        return 0
    if not args.quiet:
        for t in result.targets:
            nat = t.natural["mean"] if t.natural else float("nan")
            print(f"{t.name:<24} λ_T={t.temporal_reg:<6g} objective {t.value:10.3f}  natural mean {nat:8.3f}  "
                  f"frame change {t.stats['frame_change_grey']:6.2f}  {t.status}")
        print(f"→ {args.out}")
    return 0


def _add_visualize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="activation maximization: videos (and flow) that a unit or class responds to")
    _add_model_args(p)
    p.add_argument("--layer", default=None, help="layer of channel/neuron/top-* targets (dotted named_modules path)")
    p.add_argument("--target", required=True, help="class:0-7 | channel:0-15 | neuron:C[@t,y,x] | top-dynamic:K | "
                   "top-static:K | top-joint:K")
    p.add_argument("--from", dest="from_run", default=None, help="stlens measure run folder (or its result.json) "
                   "for top-* targets")
    p.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--param", choices=["pixel", "fourier"], default="fourier", help="input parameterization")
    p.add_argument("--optimizer", choices=["adam", "mv"], default="adam", help="adam, or mv: momentum + AdaGrad-like "
                   "update of Mahendran & Vedaldi")
    p.add_argument("--temporal-reg", type=_floats, default=[1.0], help="λ_T, or a sweep L1,L2,... (one result each; "
                   "large = slow, small = fast; default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="targets optimized together, one per batch element "
                   "(default 8)")
    p.add_argument("--batch", dest="batch_size", type=int, action=DeprecatedAlias, new="--batch-size",
                   help=argparse.SUPPRESS)
    _add_device_arg(p)
    _add_precision_arg(p, "summary.json", " (TF32 off on GPUs)")
    p.add_argument("--seed", type=_seed, default=0, help="target i starts from seed + i")
    p.add_argument("--data", default=None, help="natural clips for the comparison (default: the synth world of a "
                   "zoo model, sample: otherwise)")
    p.add_argument("--natural-clips", type=int, default=8, help="natural clips to compare with (0: none)")
    p.add_argument("--out", required=True, help="output run folder")
    p.add_argument("--overwrite", action="store_true", help="replace the visualize run in --out (when complete)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_visualize)


def cmd_ablate(args: argparse.Namespace) -> int:
    from stlens.ablate.run import ablate_to_folder
    from stlens.ablate.selection import check_k, check_selections
    from stlens.measure.result import units_path
    from stlens.measure.run import resolve_workers

    _check_device(args)  # every option checked before any work
    check_selections([v.strip() for v in args.select.split(",") if v.strip()])
    check_k(args.k)
    workers = resolve_workers(args.workers)
    units_path(args.from_run)
    result, out = ablate_to_folder(
        args.out, args.model, args.data, args.from_run, overwrite=args.overwrite, layers=args.layers,
        select=args.select, k=args.k, mode=args.mode, draws=args.draws, clips=args.clips, batch_size=args.batch_size,
        seed=args.seed, bootstrap=args.bootstrap, weights=args.weights, frames=args.frames, size=args.size,
        device=args.device, precision=args.precision, workers=workers, mask_threshold=args.mask_threshold,
        iou=args.iou, progress=not args.quiet, meta={"arguments": {k: v for k, v in vars(args).items() if k != "func"}})
    if not args.quiet:
        print(result.table())
        print(f"{result.settings['clips']} clips, {result.timing['forwards']} forwards in "
              f"{result.timing['seconds']:.1f} s on {result.settings['device']} ({result.settings['precision']}) → "
              f"{out}/ablation.csv")
    return 0


def _add_ablate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="mask the units a measure run ranks dynamic/static/joint (or random controls) "
                       "and score the model on labelled clips")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="labelled clips: synth:WORLD[?options] or an annotation file with "
                   "labels; evaluate on other clips than those measured (e.g. a synth world's split=test, seed=…)")
    p.add_argument("--from", dest="from_run", required=True, help="the stlens measure run (folder, result.json or "
                   "units.csv) whose units.csv ranks the channels")
    p.add_argument("--layers", default=None, help="L1,L2 (default: every layer of --from)")
    p.add_argument("--select", default="dynamic,static,random", help="comma-separated: dynamic, static, joint, "
                   "random, random-least-dynamic, random-least-static (default dynamic,static,random)")
    p.add_argument("--k", type=_floats, default=[10.0, 25.0, 50.0, 75.0, 90.0], help="percentages of the layer's "
                   "channels to mask, in (0, 100] (default 10,25,50,75,90)")
    p.add_argument("--mode", default="zero", help="zero (Kowal et al.), mean (each masked channel set to its mean in "
                   "the unmasked pass) or zero,mean (default zero)")
    p.add_argument("--draws", type=int, default=5, help="draws of each random selection (default 5)")
    p.add_argument("--clips", type=int, default=None, help="evaluate the first N clips of --data (default all)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward (default 16)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="segmentation data: a pixel is the object where "
                   "sigmoid(logit) > this (default 0.5; the paper's MoCA numbers use 0.2)")
    p.add_argument("--iou", choices=["mask", "box"], default="mask", help="segmentation data: IoU of the masks, or of "
                   "boxes as MoCA's evaluation (the box of the prediction's largest component vs the target's)")
    _add_workers_arg(p, "decode and prepare the clips", default=0)
    _add_device_arg(p)
    _add_precision_arg(p, "ablation.json")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over clips for the 95%% CIs "
                   "(default 1000; 0: none)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds the random draws, the clips and the bootstrap")
    p.add_argument("--out", required=True, help="output run folder (refused if it holds a complete run)")
    p.add_argument("--overwrite", action="store_true", help="replace the ablate run in --out (when complete)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_ablate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stlens", description="What do video networks encode, in space and time?")
    parser.add_argument("--version", action="version", version=f"stlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("measure", help="static vs. dynamic information per layer and channel")
    _add_measure_args(p)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("layers", help="hookable layers with their output shapes (one dry run)")
    p.add_argument("spec", help="model spec, e.g. torchvision:r3d_18")
    p.add_argument("--weights", default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    _add_device_arg(p)
    p.set_defaults(func=cmd_layers)

    _add_train_parser(sub)
    _add_track_parser(sub)
    _add_stylize_parser(sub)
    _add_pairs_parser(sub)
    _add_report_parser(sub)
    _add_visualize_parser(sub)
    _add_ablate_parser(sub)

    p = sub.add_parser("demo", help="measure the bundled models on synthetic pairs and the real sample videos")
    p.add_argument("--out", default=None, help=f"default {DEMO_OUT} ({DEMO_OUT}-segmentation with --segmentation)")
    p.add_argument("--pairs", type=int, default=64, help="pairs per factor for each model and data (default 64)")
    p.add_argument("--segmentation", action="store_true", help="the bundled segmenters instead: every stream and "
                   "fusion stage measured, units of fusion.stage3 visualized (RGB + flow optimized together)")
    p.add_argument("--steps", type=int, default=None, help="with --segmentation: optimization steps per unit "
                   "(default 128)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="stlens: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    from stlens.interrupts import EXIT_INTERRUPTED, Interrupted, handle_signals

    try:
        with handle_signals():
            return args.func(args)
    except StlensError as exc:
        print(f"stlens: error{_rank_label()}: {exc}", file=sys.stderr)
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
