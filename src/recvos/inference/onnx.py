"""ONNX export of a model's recurrent interface, and an ONNX Runtime model that the frame loop runs.

:func:`export_onnx` writes two graphs: ``FILE`` holds ``step`` (the frame, the previous masks and every
tensor of the recurrent state in; the logits, the objectness and the next state out) and ``FILE``'s sibling
``<stem>.init.onnx`` holds ``init_state`` (the frame and the entering objects' masks in; their state out).
The state's tensors, memory included, are explicit inputs and outputs named ``state.<field>`` as
:meth:`~recvos.models.state.RecurrentState.named_tensors` names them. The object count is dynamic (RVOS
visits the slots in an ONNX ``Scan``); the frame size is fixed at export (``size``): the exporter's
symbolic shapes through four strided levels cost tens of minutes to trace.

:class:`OnnxModel` presents the two graphs as a :class:`~recvos.models.base.RecurrentVOS` (``init_state``
and ``step`` call ONNX Runtime), so :meth:`~recvos.models.base.RecurrentVOS.unroll`, the
:class:`~recvos.inference.segmenter.PromptFeed` and the Segmenter's pre- and post-processing are the
PyTorch path's own.

Each file carries its provenance as ONNX metadata (``recvos.*`` keys: the format, the recvos version, the
graph, the model name and config, the weights' SHA-256, the state's names and shapes, the frame size);
loading refuses a file without it, of another format or recvos version, or whose two graphs differ.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import make_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recvos import __version__
from recvos.errors import RecvosError
from recvos.fileio import atomic_write
from recvos.models.base import RecurrentVOS, StepOutput
from recvos.models.state import RecurrentState

log = logging.getLogger(__name__)

__all__ = ["ONNX_FORMAT", "export_onnx", "init_path", "read_metadata", "OnnxModel", "require_onnx"]

ONNX_FORMAT = "recvos-onnx/1"
INSTALL_HINT = 'pip install -e ".[onnx]"'
#: objects in the export sample: 2, since torch.export specialises a dimension of size 0 or 1
SAMPLE_OBJECTS = 2
STATE_PREFIX = "state."
#: the step's outputs: ONNX names are unique, so the next state cannot reuse the inputs' names
NEXT_PREFIX = "next_state."


def require_onnx(*modules: str) -> None:
    """A one-line RecvosError saying how to install the onnx extra unless ``modules`` are importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RecvosError(f"{', '.join(missing)} is not installed: install the onnx extra, {INSTALL_HINT}")


def init_path(path: str | os.PathLike) -> Path:
    """The init graph's file next to the step graph's: ``model.onnx`` -> ``model.init.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.init{path.suffix or '.onnx'}")


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names and fp32 values): ties an export to its weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


class _InitGraph(nn.Module):
    """init_state with plain tensors in and out (the export's module)."""

    def __init__(self, model: RecurrentVOS) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        state = self.model.init_state(frame, masks)
        return tuple(t.contiguous() for t in state.named_tensors().values())


class _StepGraph(nn.Module):
    """step with plain tensors in and out (the export's module)."""

    def __init__(self, model: RecurrentVOS, state_type: type[RecurrentState], names: list[str]) -> None:
        super().__init__()
        self.model, self.state_type, self.names = model, state_type, names

    def forward(
        self, frame: torch.Tensor, state: tuple[torch.Tensor, ...], prev_masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        tensors = dict(zip(self.names, state, strict=True))
        s = self.state_type.from_named_tensors(state[0].shape[1], tensors)
        out = self.model.step(frame, s, prev_masks)
        return (out.logits, out.objectness, *(t.contiguous() for t in out.state.named_tensors().values()))


def _export(
    module: nn.Module, args: tuple[Any, ...], dynamic: Any, inputs: list[str], outputs: list[str]
) -> Any:
    """torch.export (non-strict), then the ONNX exporter with its graph optimiser."""
    exported = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
    return torch.onnx.export(
        exported, input_names=inputs, output_names=outputs, dynamo=True, optimize=True, verbose=False
    )


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Logger ``name`` at WARNING for the block (the ONNX graph optimiser logs every rewrite at INFO)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _name_object_dim(proto: Any, name: str) -> None:
    """Call the object dimension (axis 1 of input ``name``) "O" in the graph's inputs and outputs (the
    exporter names its symbols s0, s1, ...)."""
    value = next(v for v in proto.graph.input if v.name == name)
    symbol = value.type.tensor_type.shape.dim[1].dim_param
    for v in [*proto.graph.input, *proto.graph.output]:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param == symbol:
                d.dim_param = "O"


def export_onnx(
    model: RecurrentVOS, path: str | os.PathLike, *, size: tuple[int, int] = (240, 427), source: str = ""
) -> list[Path]:
    """Export ``model``'s init_state and step for frames of ``size`` (h, w; the Segmenter's processing size)
    to ``path`` and :func:`init_path` (``path``); returns both paths. ``source`` (the checkpoint or name) is
    recorded in the metadata."""
    require_onnx("onnx", "onnxscript")
    import onnx

    if model.inference_only:
        raise RecvosError(f"{model.name} was optimized for inference (BatchNorm folded); export the original")
    path = Path(path)
    model = copy.deepcopy(model).cpu().float().eval()
    torch.manual_seed(0)
    frame = torch.rand(1, 3, *size)
    objects = model.max_objects if model.mode == "zero-shot" else SAMPLE_OBJECTS
    masks = (torch.rand(1, objects, *size) > 0.5).float() if model.mode == "one-shot" else None
    with torch.no_grad():
        state = model.init_state(frame, masks)
    names = list(state.named_tensors())
    state_names = [STATE_PREFIX + n for n in names]
    state_args = tuple(t.contiguous() for t in state.named_tensors().values())
    objects_dim = {1: torch.export.Dim("O", min=1, max=255)} if model.mode == "one-shot" else None
    prev = torch.rand(1, objects, *size) if model.uses_prev_masks else None

    step_module = _StepGraph(model, type(state), names)
    step_inputs = ["frame", *state_names] + (["prev_masks"] if prev is not None else [])
    step_dynamic = (None, tuple(objects_dim for _ in state_args), objects_dim if prev is not None else None)
    with torch.no_grad(), _quiet("onnx_ir"), _quiet("onnxscript"):
        step = _export(
            step_module,
            (frame, state_args, prev),
            step_dynamic,
            step_inputs,
            ["logits", "objectness", *(NEXT_PREFIX + n for n in names)],
        )
        init = _export(
            _InitGraph(model),
            (frame, masks),
            (None, objects_dim if masks is not None else None),
            ["frame"] + (["masks"] if masks is not None else []),
            state_names,
        )
        protos = {"step": step.model_proto, "init": init.model_proto}
    if objects_dim is not None:  # zero-shot models have a fixed object count (their slots)
        _name_object_dim(protos["step"], state_names[0])
        _name_object_dim(protos["init"], "masks")
    state_shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in protos["step"].graph.input
        if v.name.startswith(STATE_PREFIX)
    }
    meta = {
        "recvos.format": ONNX_FORMAT,
        "recvos.version": __version__,
        "recvos.model": model.name,
        "recvos.config": json.dumps(model.config, sort_keys=True),
        "recvos.mode": model.mode,
        "recvos.uses_prev_masks": json.dumps(model.uses_prev_masks),
        "recvos.max_objects": str(model.max_objects),
        "recvos.size": json.dumps(list(size)),
        "recvos.weights_sha256": weights_sha256(model),
        "recvos.source": source,
        "recvos.state": json.dumps(state_shapes),
    }
    paths = [path, init_path(path)]
    for (kind, proto), where in zip(protos.items(), paths, strict=True):
        onnx.helper.set_model_props(proto, {**meta, "recvos.graph": kind})
        with atomic_write(where) as f:
            f.write(proto.SerializeToString())
    log.info("exported %s (%s) to %s and %s", model.name, source or "model", *paths)
    return paths


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``recvos.*`` metadata of an ONNX file written by :func:`export_onnx`, checked: RecvosError (naming
    the file and the fix) for a missing file, a file without it, or one of another format or recvos version."""
    import onnx

    path = Path(path)
    fix = f"export it again with this recvos: recvos export --onnx {path}"
    if not path.is_file():
        raise RecvosError(f"{path}: ONNX file not found; {fix}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
        raise RecvosError(f"{path}: not an ONNX file ({type(e).__name__}); {fix}") from None
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("recvos.")}
    if "recvos.format" not in meta:
        raise RecvosError(f"{path}: an ONNX file without recvos metadata (not written by recvos); {fix}")
    if meta["recvos.format"] != ONNX_FORMAT or meta.get("recvos.version") != __version__:
        raise RecvosError(
            f"{path}: exported by recvos {meta.get('recvos.version', '?')} in format "
            f"{meta['recvos.format']!r}, but this is recvos {__version__} reading {ONNX_FORMAT!r}; {fix}"
        )
    return meta


class OnnxModel(RecurrentVOS):
    """A model exported by :func:`export_onnx`, run by ONNX Runtime behind the RecurrentVOS interface.

    ``path``: the step graph (its init graph is :func:`init_path` (``path``)). ``threads``: ONNX Runtime's
    intra-op threads (default: torch's). It has no parameters: it runs, it cannot be trained or saved.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        require_onnx("onnxruntime", "onnx")
        import onnxruntime as ort

        self.path = Path(path)
        meta = read_metadata(self.path)
        init_meta = read_metadata(init_path(self.path))
        if meta.get("recvos.graph") != "step" or init_meta.get("recvos.graph") != "init":
            raise RecvosError(
                f"{self.path}: expected the step graph with its init graph beside it ({init_path(self.path).name}); "
                f"pass the FILE given to recvos export --onnx"
            )
        same = ("recvos.model", "recvos.config", "recvos.weights_sha256", "recvos.size")
        if any(meta.get(k) != init_meta.get(k) for k in same):
            raise RecvosError(
                f"{init_path(self.path)}: exported from another model than {self.path.name}; "
                f"export both again with recvos export --onnx {self.path}"
            )
        self.metadata = meta
        self.name = meta["recvos.model"]
        self.config = json.loads(meta["recvos.config"])
        self.mode = meta["recvos.mode"]
        self.uses_prev_masks = json.loads(meta["recvos.uses_prev_masks"])
        self.max_objects = int(meta["recvos.max_objects"])
        self.size = tuple(json.loads(meta["recvos.size"]))
        self.weights_sha256 = meta["recvos.weights_sha256"]
        names = [n.removeprefix(STATE_PREFIX) for n in json.loads(meta["recvos.state"])]
        fields = list(dict.fromkeys(n.partition(".")[0] for n in names))
        self.state_type = make_dataclass("OnnxState", [(f, Any) for f in fields], bases=(RecurrentState,))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # threads that spin while waiting collapse when other processes share the cores (as OpenMP's do,
        # see recvos.cli.main): wait passively
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._step = ort.InferenceSession(str(self.path), options, providers=providers)
        self._init = ort.InferenceSession(str(init_path(self.path)), options, providers=providers)
        self.inference_only = True

    def check_size(self, size: tuple[int, int], source: str) -> None:
        """RecvosError unless frames of ``size`` (h, w) are the size the graphs were exported for."""
        if tuple(size) != self.size:
            h, w = self.size
            raise RecvosError(
                f"{self.path}: exported for {w}x{h} frames but {source} is processed at {size[1]}x{size[0]}; "
                f"export for that size: recvos export --onnx FILE --size {size[0]}x{size[1]}"
            )

    def _run(self, session: Any, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {k: np.ascontiguousarray(v.detach().cpu().float().numpy()) for k, v in feeds.items()}
        names = [o.name for o in session.get_outputs()]
        return {n: torch.from_numpy(a) for n, a in zip(names, session.run(names, arrays), strict=True)}

    def _state(self, outputs: dict[str, torch.Tensor], prefix: str) -> RecurrentState:
        tensors = {k.removeprefix(prefix): v for k, v in outputs.items() if k.startswith(prefix)}
        return self.state_type.from_named_tensors(next(iter(tensors.values())).shape[1], tensors)

    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> RecurrentState:
        """frame [1, 3, h, w]; masks [1, O, h, w] (one-shot) or None (zero-shot) -> the state, by ONNX Runtime."""
        self.check_size(tuple(frame.shape[-2:]), "this video")
        feeds = {"frame": frame} if masks is None else {"frame": frame, "masks": masks}
        return self._state(self._run(self._init, feeds), STATE_PREFIX)

    def step(self, frame: torch.Tensor, state: RecurrentState, prev_masks: torch.Tensor | None) -> StepOutput:
        """One frame by ONNX Runtime (see :meth:`RecurrentVOS.step`)."""
        feeds = {"frame": frame, **{STATE_PREFIX + k: v for k, v in state.named_tensors().items()}}
        if self.uses_prev_masks:
            feeds["prev_masks"] = prev_masks
        out = self._run(self._step, feeds)
        return StepOutput(out["logits"], out["objectness"], self._state(out, NEXT_PREFIX))

    @classmethod
    def from_model(cls, model: RecurrentVOS, size: tuple[int, int], threads: int | None = None) -> OnnxModel:
        """``model`` exported for frames of ``size`` (h, w) and loaded (the files are gone afterwards)."""
        with tempfile.TemporaryDirectory(prefix="recvos-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path, size=size)
            return cls(path, threads)

    def check_exported_from(self, model: RecurrentVOS, source: str) -> None:
        """RecvosError unless this file was exported from ``model`` (same architecture and weights)."""
        if (model.name, model.config) != (self.name, self.config):
            what = f"{self.name} {json.dumps(self.config, sort_keys=True)}"
            raise RecvosError(
                f"{self.path}: exported from another architecture ({what}) than {source} ({model.name}); "
                f"export it from that model: recvos export --onnx {self.path} --model {source}"
            )
        if weights_sha256(model) != self.weights_sha256:
            raise RecvosError(
                f"{self.path}: exported from other weights than {source}; "
                f"export it again: recvos export --onnx {self.path} --model {source}"
            )
