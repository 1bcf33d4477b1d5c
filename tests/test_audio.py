import numpy as np
import pytest
import soundfile as sf
import torch

from birdclef.core.errors import AudioError, ConfigError
from birdclef.data.audio import load_audio, write_audio
from birdclef.data.frontend import MelFrontend, MfccFrontend
from tests.conftest import SR, tone, write_wav


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(1.0, 500), tone(1.0, 1500)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, SR), (left + right) / 2, atol=1e-6)


def test_other_rates_are_resampled(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(2.0, 1000, sr=44100), sr=44100)
    audio = load_audio(path, SR)
    assert len(audio) == 2 * SR
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * SR / len(audio) == pytest.approx(1000, abs=2)


def test_ogg_roundtrip(tmp_path):
    audio = tone(70.0)  # longer than one write block
    write_audio(tmp_path / "x.ogg", audio, SR)
    back = load_audio(tmp_path / "x.ogg", SR)
    assert len(back) == len(audio)
    assert np.corrcoef(back[:SR], audio[:SR])[0, 1] > 0.99


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "cannot decode"),
        (lambda p: p.write_bytes(b"OggS" + bytes(range(256)) * 8), "cannot decode"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), SR, format="WAV"), "zero-length"),
        (
            lambda p: sf.write(
                p, np.full(100, np.nan, np.float32), SR, format="WAV", subtype="FLOAT"
            ),
            "NaN",
        ),
    ],
    ids=["missing", "empty-file", "corrupt", "zero-length", "nan"],
)
def test_bad_audio_raises_a_named_error(tmp_path, make, message):
    path = tmp_path / "bad.ogg"
    make(path)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path, SR)
    assert "bad.ogg" in str(info.value)


def test_mel_shape_and_per_window_floor():
    frontend = MelFrontend(SR)
    loud = torch.from_numpy(tone(5.0))
    quiet = loud * 1e-3
    alone = frontend(quiet.unsqueeze(0))
    batched = frontend(torch.stack([loud, quiet]))
    assert batched.shape == (2, 128, 320)  # 5 s at hop 500: frames tile the window
    torch.testing.assert_close(batched[1:], alone)  # no dependence on the batch's loudest window
    assert (alone.amax() - alone.amin()).item() == pytest.approx(80.0, abs=1e-3)


def test_mfcc_shape_and_bad_params():
    assert MfccFrontend(SR, n_mfcc=20)(torch.zeros(1, 5 * SR)).shape == (1, 20, 320)
    with pytest.raises(ConfigError, match="f_max"):
        MelFrontend(SR, f_max=20000)
    with pytest.raises(ConfigError, match="n_mfcc"):
        MfccFrontend(SR, n_mfcc=500)


def test_frames_in_blocks_equal_one_piece(monkeypatch):
    """Long recordings are transformed in blocks; the frames do not depend on the block size."""
    from birdclef.data import frontend as frontend_module

    frontend = MelFrontend(SR, n_mels=32)
    wave = tone(7.3, 1500) + 0.01 * np.random.default_rng(0).standard_normal(int(7.3 * SR)).astype(
        np.float32
    )
    whole = frontend.frames(wave)
    monkeypatch.setattr(frontend_module, "FRAME_BLOCK", 37)
    blocked = frontend.frames(wave)
    assert whole.shape == blocked.shape == (1 + len(wave) // 500, 32)
    torch.testing.assert_close(whole, blocked, rtol=0, atol=1e-4)
    # the same frames as torchaudio's centred STFT of the whole recording
    import torchaudio

    ref = torchaudio.transforms.MelSpectrogram(
        SR, n_fft=2048, hop_length=500, f_min=20, f_max=16000, n_mels=32
    )
    expected = 10 * torch.log10(ref(torch.from_numpy(wave)).clamp_min(1e-10)).T
    torch.testing.assert_close(whole, expected, rtol=0, atol=1e-3)
