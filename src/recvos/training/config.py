"""Training configuration: nested dataclasses with defaults < YAML preset < ``key=value`` overrides.

``load_config("configs/x.yaml", ["train.steps=100", "model.options.backbone=resnet18"])`` gives a
:class:`Config`. Keys are dotted paths; values are parsed as YAML scalars (``1e-3``, ``true``, ``[240, 427]``,
``null``). An unknown key raises :class:`RecvosError` listing the close matches. ``model.options`` is free
form: it is passed to ``recvos.models.factory.build_model`` as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recvos.data.clips import CompositeOptions, PseudoOptions, SourceMix, SyntheticOptions
from recvos.errors import RecvosError
from recvos.fileio import atomic_write

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    name: str = "rvos-st"
    #: keyword arguments of build_model (mode, backbone, backbone_weights, max_objects, widths, ...); the
    #: task trained is the model's ``mode`` ("one-shot" by default, "zero-shot" for rvos-st/rvos-s)
    options: dict[str, Any] = field(default_factory=dict)
    #: warm start: a recvos checkpoint (.pt or .pt.gz) whose weights initialise a new run (not used when
    #: resuming); see :func:`recvos.models.loading.warm_start`
    init_from: str | None = None

    @property
    def zero_shot(self) -> bool:
        return self.options.get("mode", "one-shot") == "zero-shot"


@dataclass
class FeatureCacheConfig:
    """Train from cached backbone features (:mod:`recvos.training.feature_cache`): a pool of clips rendered
    once by the configured data pipeline, their frozen backbone's features stored in fp16 on disk."""

    #: the cache folder (null: off; frames go through the backbone on every step)
    dir: str | None = None
    #: clips in the pool (each one augmented view drawn by data.mix/augment) and frames per pool clip
    #: (training windows of data.num_frames are drawn from them)
    clips: int = 500
    frames: int = 10
    #: pixels added to data.size in each dimension (a multiple of 32): training crops of data.size are taken
    #: at offsets that are multiples of 32, so the features of every stride are cut where the masks are
    margin: int = 32
    #: a cache built for another backbone, size or data config is rebuilt (false: refused with an error)
    rebuild: bool = False


@dataclass
class DataConfig:
    #: training dataset: kind in {davis2016, davis2017, youtube-vos, folder} or null (synthetic only)
    kind: str | None = None
    root: str | None = None
    split: str | None = "train"
    #: keep only these sequence names (empty: all) / drop these (e.g. a validation split carved out of train)
    sequences: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    #: training size [H, W] (240x427 DAVIS, 256x448 YouTube-VOS)
    size: list[int] = field(default_factory=lambda: [240, 427])
    #: frames per clip; with num_frames_max > num_frames each batch draws T uniformly in that range (S2S 5-11)
    num_frames: int = 5
    num_frames_max: int | None = None
    #: random temporal stride in [1, max_stride]
    max_stride: int = 1
    #: object slots per clip (O); clips with more objects keep a random subset
    max_objects: int = 1
    #: "all" frames, or "annotated" frames only (YouTube-VOS annotates every 5th frame)
    frames: str = "all"
    #: clips per epoch of the sampler (the sampler reshuffles every epoch)
    clips_per_epoch: int = 2000
    num_workers: int = 2
    mix: SourceMix = field(default_factory=SourceMix)
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)
    composite: CompositeOptions = field(default_factory=CompositeOptions)
    pseudo: PseudoOptions = field(default_factory=PseudoOptions)
    feature_cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)


@dataclass
class AugmentConfig:
    enabled: bool = True
    #: zoom relative to the scale that makes the frame cover the training size
    scale: list[float] = field(default_factory=lambda: [0.9, 1.3])
    hflip: float = 0.5
    rotate: float = 10.0  # degrees, +-
    shear: float = 5.0  # degrees, +-
    translate: float = 0.1  # fraction of the size, +- (on top of the random crop)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02  # fraction of the hue circle
    #: small per-frame jitter on top of the clip draw (motion)
    jitter_translate: float = 0.02
    jitter_rotate: float = 2.0
    jitter_scale: float = 0.03


@dataclass
class LossConfig:
    iou: float = 1.0
    bce: float = 0.0
    dice: float = 0.0
    lovasz: float = 0.0
    objectness: float = 1.0
    #: one-shot: also supervise frame 0 (whose mask is given); zero-shot always supervises it
    first_frame: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-3
    #: learning rate of the backbone parameters (null: same as lr)
    backbone_lr: float | None = 1e-4
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    #: "cosine" (to min_lr_ratio * lr at train.steps) or "constant"
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    #: max gradient norm (0 or null: off)
    grad_clip: float | None = 1.0
    #: backbone frozen for the first K steps
    freeze_backbone_steps: int = 0


@dataclass
class CurriculumConfig:
    #: RVOS: ground-truth previous masks first, the model's own predictions (Mask-ST+) from this step on
    own_masks_from_step: int | None = None
    #: S2S: clips of annotated frames only first, clips of all frames from this step on
    all_frames_from_step: int | None = None


@dataclass
class ValConfig:
    kind: str | None = None
    root: str | None = None
    split: str | None = "val"
    #: keep only these sequence names (empty: all) / drop these
    sequences: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    #: every M steps (0: off); at most this many sequences and frames of each, segmented exactly as
    #: ``recvos segment`` does (the Segmenter, frames at ``max_size`` on the shorter side, masks scored at
    #: the annotation size)
    every: int = 0
    max_sequences: int = 5
    max_frames: int = 30
    max_size: int = 240
    #: use the synthetic generator as the held-out set when no dataset is given (seeds disjoint from training)
    synthetic: int = 0


@dataclass
class TrainConfig:
    steps: int = 10000
    #: end the run after this step although the lr schedule spans ``steps`` (null: run all ``steps``)
    stop_at: int | None = None
    #: clips per optimizer step per process = batch_size * accumulate
    batch_size: int = 4
    accumulate: int = 1
    #: "none", "bf16", "fp16" (autocast; on CPU only bf16 is used, fp16 is ignored there) or "auto" (bf16 where
    #: the CPU or GPU has it natively, fp16 on other GPUs, none on other CPUs: ``recvos.training.trainer.resolve_amp``)
    amp: str = "none"
    #: keep convolution weights, frames and cached features channels-last (NHWC), the layout oneDNN and cuDNN
    #: compute in: the same results, 3-6% more clips/s on a 2-core Intel Xeon in fp32 (BENCHMARKS.md,
    #: "Channels-last training"); false: NCHW, as before 2026-12-01
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    image_every: int = 500
    tensorboard: bool = True
    progress: bool = True
    #: DDP: set true for models with parameters that some steps do not use
    find_unused_parameters: bool = False
    #: exponential moving average of the weights with this decay per step (e.g. 0.99; null: off). The
    #: average is what validation scores and what checkpoints offer as the model (``state_dict``); the raw
    #: weights are kept for resuming (``train_state_dict``)
    ema: float | None = None


@dataclass
class PromptTrainConfig:
    """Simulated users for the ``prompt-head`` model (:mod:`recvos.training.prompt_task`)."""

    #: how a session starts: a box, a perturbed mask to correct (a propagated mask), else a first click
    box: float = 0.4
    mask: float = 0.15
    #: each box side moves by up to this fraction of the box size
    box_jitter: float = 0.08
    #: rounds of simulated clicks run without gradient before the round that is trained (0..max_rounds)
    max_rounds: int = 4
    #: validation: this many frames per held-out video (evenly spaced), box IoU and IoU after 1 and 3 clicks
    val_frames: int = 6


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prompts: PromptTrainConfig = field(default_factory=PromptTrainConfig)
    #: run directory (checkpoints, logs, config.yaml)
    out: str = "runs/default"


_CHOICES = {
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "optim.schedule": ("cosine", "constant"),
    "data.frames": ("all", "annotated"),
}


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


#: common names for settings that recvos spells differently (leaf name -> recvos leaf name)
_SYNONYMS = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "base_lr": "lr",
    "batch": "batch_size",
    "bs": "batch_size",
    "iterations": "steps",
    "iters": "steps",
    "max_steps": "steps",
    "num_steps": "steps",
    "wd": "weight_decay",
}


def _close_keys(key: str, keys: list[str]) -> list[str]:
    """Known keys a mistyped ``key`` may mean: spelling neighbours, synonyms and acronyms of its last part
    (``optim.learning_rate`` -> ``optim.lr``), in the same section first."""
    section, _, leaf = key.rpartition(".")
    words = [w for w in leaf.lower().split("_") if w]
    acronym = "".join(w[0] for w in words) if len(words) > 1 else None
    out = []
    for k in keys:
        k_section, _, k_leaf = k.rpartition(".")
        if (_SYNONYMS.get(leaf.lower()) == k_leaf or (acronym and k_leaf == acronym)) and (
            k_section == section or not section
        ):
            out.append(k)
    out += difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    return list(dict.fromkeys(out))[:3]


def _unknown(key: str, where: str) -> RecvosError:
    close = _close_keys(key, _all_keys(Config))
    hint = (
        f"; did you mean {', '.join(close)}?" if close else "; see the keys of recvos.training.config.Config"
    )
    return RecvosError(f"unknown config key {key!r} in {where}{hint}")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except RecvosError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecvosError(f"config key {key!r} in {where} must be a list, got {value!r}")
        return [_coerce(v, args[0], key, where) for v in value] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecvosError(f"config key {key!r} in {where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise RecvosError(f"config key {key!r} in {where} must be {getattr(tp, '__name__', tp)}, got {value!r}")


def _apply(obj: Any, data: dict, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise _unknown(key, where)
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                raise RecvosError(f"config key {key!r} in {where} is a section; give {key}.<name>=value")
            _apply(getattr(obj, k), v, f"{key}.", where)
        else:
            setattr(obj, k, _coerce(v, tp, key, where))


def _migrate(data: dict, where: str) -> dict:
    """Keys of older configs (saved run directories) in today's form: ``train.task`` -> ``model.options.mode``,
    ``val.size`` [H, W] -> ``val.max_size`` (its shorter side)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    train, val = data.get("train"), data.get("val")
    if isinstance(train, dict) and "task" in train:
        task = train.pop("task")
        model = data.setdefault("model", {})
        options = model.setdefault("options", {}) if isinstance(model, dict) else None
        if isinstance(options, dict) and "mode" not in options and task != "one-shot":
            options["mode"] = task
        log.info("%s: train.task is now model.options.mode", where)
    if isinstance(val, dict) and "size" in val:
        size = val.pop("size")
        if isinstance(size, (list, tuple)) and size and "max_size" not in val:
            val["max_size"] = min(int(v) for v in size)
        log.info("%s: val.size is now val.max_size (the shorter side)", where)
    return data


def config_from_dict(data: dict, where: str = "config") -> Config:
    """Defaults updated by a nested dict (e.g. a parsed YAML preset); unknown keys raise RecvosError."""
    cfg = Config()
    if data:
        if not isinstance(data, dict):
            raise RecvosError(f"{where} must be a YAML mapping of sections (model:, data:, train:, ...)")
        _apply(cfg, _migrate(data, where), "", where)
    return validate_config(cfg)


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (YAML/JSON/torch.save(weights_only) friendly)."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=1e-3"`` -> ``("a.b", 0.001)`` (value parsed as YAML)."""
    if "=" not in text:
        raise RecvosError(f"override {text!r} must look like key=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise RecvosError(f"override {text!r}: value is not valid YAML ({e.__class__.__name__})") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; users mean the number
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Set dotted keys in place (``model.options.<name>`` may add new option names)."""
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if parts[:2] == ["model", "options"] and len(parts) >= 3:
            d = cfg.model.options
            for p in parts[2:-1]:
                d = d.setdefault(p, {})
            d[parts[-1]] = value
            continue
        nested: dict = {}
        cur = nested
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        _apply(cfg, nested, "", f"override {text!r}")
    return validate_config(cfg)


def validate_config(cfg: Config) -> Config:
    """Check choices and ranges; raise RecvosError naming the key."""
    for key, choices in _CHOICES.items():
        sect, name = key.split(".")
        v = getattr(getattr(cfg, sect), name)
        if v not in choices:
            raise RecvosError(f"config key {key!r} must be one of {', '.join(choices)}, got {v!r}")
    mode = cfg.model.options.get("mode", "one-shot")
    if mode not in ("one-shot", "zero-shot", "interactive"):
        raise RecvosError(
            f"config key 'model.options.mode' must be one-shot, zero-shot or interactive, got {mode!r}"
        )
    pc = cfg.prompts
    for key, v in (("prompts.box", pc.box), ("prompts.mask", pc.mask), ("prompts.box_jitter", pc.box_jitter)):
        if not 0.0 <= v <= 1.0:
            raise RecvosError(f"config key {key!r} must be in [0, 1], got {v}")
    if pc.box + pc.mask > 1.0:
        raise RecvosError("config keys prompts.box + prompts.mask must be <= 1 (the rest start with a click)")
    if pc.max_rounds < 0 or pc.val_frames < 1:
        raise RecvosError("config keys prompts.max_rounds must be >= 0 and prompts.val_frames >= 1")
    if cfg.val.max_size < 8:
        raise RecvosError(f"config key 'val.max_size' must be >= 8, got {cfg.val.max_size}")
    for key in ("data.size", "data.synthetic.size"):
        obj: Any = cfg
        for p in key.split("."):
            obj = getattr(obj, p)
        if len(obj) != 2 or min(obj) < 8:
            raise RecvosError(f"config key {key!r} must be [H, W] with H, W >= 8, got {obj!r}")
    d, t = cfg.data, cfg.train
    if d.num_frames < 1:
        raise RecvosError(f"config key 'data.num_frames' must be >= 1, got {d.num_frames}")
    if d.num_frames_max is not None and d.num_frames_max < d.num_frames:
        raise RecvosError("config key 'data.num_frames_max' must be >= data.num_frames (or null)")
    for key, v in (
        ("data.max_stride", d.max_stride),
        ("data.max_objects", d.max_objects),
        ("train.batch_size", t.batch_size),
        ("train.accumulate", t.accumulate),
        ("train.steps", t.steps),
        ("data.clips_per_epoch", d.clips_per_epoch),
        ("train.keep_last", t.keep_last),
    ):
        if v < 1:
            raise RecvosError(f"config key {key!r} must be >= 1, got {v}")
    if t.ema is not None and not 0.0 < t.ema < 1.0:
        raise RecvosError(f"config key 'train.ema' must be in (0, 1) (or null), got {t.ema}")
    if t.stop_at is not None and t.stop_at < 1:
        raise RecvosError(f"config key 'train.stop_at' must be >= 1 (or null), got {t.stop_at}")
    fc = d.feature_cache
    if fc.dir is not None:
        if fc.clips < 1 or fc.frames < (d.num_frames_max or d.num_frames):
            raise RecvosError(
                "config keys data.feature_cache.clips must be >= 1 and data.feature_cache.frames >= the clip "
                f"length {d.num_frames_max or d.num_frames}, got {fc.clips} and {fc.frames}"
            )
        if fc.margin < 0 or fc.margin % 32 or fc.margin > 256:
            raise RecvosError(
                f"config key 'data.feature_cache.margin' must be a multiple of 32 in 0..256, got {fc.margin}"
            )
        if cfg.optim.freeze_backbone_steps < t.steps:
            raise RecvosError(
                "data.feature_cache needs the backbone frozen for the whole run: set "
                f"optim.freeze_backbone_steps >= train.steps ({t.steps}), or data.feature_cache.dir=null"
            )
    mix = d.mix
    weights = (mix.real, mix.composite, mix.synthetic, mix.pseudo)
    if min(weights) < 0 or sum(weights) <= 0:
        raise RecvosError(
            "config keys data.mix.{real,composite,synthetic,pseudo} must be >= 0 with a positive sum"
        )
    return cfg


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; RecvosError naming the file if it is not UTF-8 text or not YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise RecvosError(f"config file {path} is not UTF-8 text; pass a YAML preset") from None
    except yaml.YAMLError as e:
        raise RecvosError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults < the YAML preset at ``path`` < ``overrides`` (``["key=value", ...]``)."""
    data: dict = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise RecvosError(
                f"config file {path} does not exist; pass a preset from configs/ (e.g. configs/smoke_synthetic.yaml)"
            )
        data = read_yaml(path)
    cfg = config_from_dict(data, where)
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    with atomic_write(path, "w") as f:
        f.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
