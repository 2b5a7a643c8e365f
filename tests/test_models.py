"""Students, attention placements, patch loss and encoder weights (tiny inputs, random weights)."""

from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from mtvad.errors import EncoderWeightsError
from mtvad.students.config import TrainConfig
from mtvad.students.loss import patch_errors, patch_loss, training_loss
from mtvad.students.models import (
    AppearanceStudent,
    MotionStudent,
    build_model,
    count_parameters,
    encoder_family,
    load_encoder_weights,
)
from mtvad.students.models.attention import ContextAttention, resize_map

POSITIONS = ("encoder", "decoder", "skip", "final")


def inputs(b=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


def pair(attention="off", scse="off", seed=0, encoder="vgg11"):
    """A student with the mechanism on, and the same weights in a student without it (eval mode).

    Placement code is the same for every VGG; vgg11 keeps these tests fast on 2 CPU cores."""
    torch.manual_seed(seed)
    on = MotionStudent(encoder, scse_placement=scse, attention=attention).eval()
    off = MotionStudent(encoder, scse_placement="off", attention="off").eval()
    result = off.load_state_dict(on.state_dict(), strict=False)
    assert not result.missing_keys
    assert all(k.startswith(("context_attention.", "encoder_scse.")) or ".attention" in k
               for k in result.unexpected_keys)
    return on, off


# -------------------------------------------------------------------------------------------- shapes


def test_appearance_student_maps_two_frames_to_class_logits():
    model = AppearanceStudent(n_classes=3).eval()
    assert model.unet.encoder.conv1.in_channels == 6  # frames t-1 and t, stacked
    with torch.no_grad():
        out = model(torch.randn(2, 6, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(model.probabilities(torch.randn(1, 6, 32, 32)).sum(1), torch.ones(1, 32, 32))


@pytest.mark.parametrize("attention", ("off", "decoder"))
def test_motion_student_maps_a_frame_to_one_magnitude_map(attention):
    model = MotionStudent(attention=attention).eval()
    frame, context = inputs()
    with torch.no_grad():
        assert model(frame, context).shape == (1, 1, 32, 32)
    if attention != "off":
        with pytest.raises(ValueError, match="needs the context"):
            model(frame)


def test_motion_student_without_attention_is_exactly_smps_vgg16_unet():
    model = MotionStudent(scse_placement="off", attention="off").eval()
    frame, _ = inputs()
    with torch.no_grad():
        assert torch.equal(model(frame), model.unet(frame))
    assert model.unet.encoder.features[0].in_channels == 3 and model.encoder_name == "vgg16"


def test_context_attention_is_a_one_channel_map_in_0_1():
    net = ContextAttention().eval()
    a = net(torch.rand(2, 3, 32, 32))
    a = a.detach()
    assert a.shape == (2, 1, 32, 32) and float(a.min()) > 0 and float(a.max()) < 1
    assert resize_map(a, (8, 8)).shape == (2, 1, 8, 8)
    assert torch.allclose(resize_map(a, (8, 8)), nn.functional.avg_pool2d(a, 4))  # area average down


# ------------------------------------------------------------------------------------------- placements


@pytest.mark.parametrize("position", POSITIONS)
def test_each_attention_position_changes_the_forward_pass_and_only_through_the_map(position):
    on, off = pair(attention=position)
    frame, context = inputs()
    with torch.no_grad():
        y_on, y_off = on(frame, context), off(frame)
        assert not torch.allclose(y_on, y_off, atol=1e-4)
        a = on.attention_map(context)
        if position == "final":  # a gain on the predicted map: out * (1 + a)
            assert torch.allclose(y_on, y_off * (1 + a), atol=1e-5)
        # the encoder path changes only when the map sits in the encoder
        deepest_on, deepest_off = on.encode(frame, a)[-1], off.encode(frame)[-1]
        assert torch.equal(deepest_on, deepest_off) == (position != "encoder")
        # a map of zeros makes x * (1 + a) the identity: the student is then exactly the one without attention
        nn.init.zeros_(on.context_attention.head.weight)
        nn.init.constant_(on.context_attention.head.bias, -1e4)
        assert torch.allclose(on(frame, context), y_off, atol=1e-6)


def test_gate_form_multiplies_by_the_map():
    torch.manual_seed(0)
    on = MotionStudent("vgg11", scse_placement="off", attention="final", attention_form="gate").eval()
    off = MotionStudent("vgg11", scse_placement="off", attention="off").eval()
    off.load_state_dict(on.state_dict(), strict=False)
    frame, context = inputs()
    with torch.no_grad():
        assert torch.allclose(on(frame, context), off(frame) * on.attention_map(context), atol=1e-6)


def test_scse_on_the_encoder_mid_layers_changes_the_forward_pass():
    on, off = pair(scse="encoder-mid")
    assert sorted(on.encoder_scse) == ["2", "3", "4"]  # VGG conv blocks 2-4: the mid layers
    assert [on.encoder_scse[k].sSE[0].in_channels for k in ("2", "3", "4")] == [128, 256, 512]
    assert all(b.attention1.attention.__class__ is nn.Identity for b in on.unet.decoder.blocks)
    frame, _ = inputs()
    with torch.no_grad():
        y_on = on(frame)
        assert not torch.allclose(y_on, off(frame), atol=1e-4)
        for k in list(on.encoder_scse):
            on.encoder_scse[k] = nn.Identity()
        assert torch.allclose(on(frame), off(frame), atol=1e-6)


def test_scse_in_the_decoder_is_smps_decoder_attention_and_changes_the_forward_pass():
    on, off = pair(scse="decoder")
    assert len(on.encoder_scse) == 0
    frame, _ = inputs()
    with torch.no_grad():
        assert not torch.allclose(on(frame), off(frame), atol=1e-4)
        for block in on.unet.decoder.blocks:
            block.attention1.attention = nn.Identity()
            block.attention2.attention = nn.Identity()
        assert torch.allclose(on(frame), off(frame), atol=1e-6)


def test_build_model_follows_the_config_and_attention_adds_parameters():
    config = TrainConfig()
    full = build_model("motion", config, 2)
    assert full.attention == "decoder" and full.scse_placement == "encoder-mid"
    config.motion.attention, config.motion.scse = "off", "off"
    plain = build_model("motion", config, 2)
    added = count_parameters(full.context_attention) + count_parameters(full.encoder_scse)
    assert count_parameters(full) == count_parameters(plain) + added > count_parameters(plain)
    assert build_model("appearance", config, 5).n_classes == 5


# ------------------------------------------------------------------------------------------- patch loss


def test_patch_loss_is_the_largest_patch_mse_per_sample_then_the_batch_mean():
    pred = torch.zeros(2, 1, 8, 8)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 0:2, 2:4] = 2.0  # sample 0: all of patch (0, 1) off by 2 -> patch MSE 4
    target[1, 0, 7, 7] = 2.0  # sample 1: one pixel of patch (3, 3) off by 2 -> 4 / 4 pixels = 1
    target[1, 0, 0, 0] = 1.0  # and one pixel of patch (0, 0) off by 1 -> 0.25
    errors = patch_errors(pred, target)
    assert errors.shape == (2, 4, 4)
    assert errors[0, 0, 1] == 4.0 and errors[0].sum() == 4.0
    assert errors[1, 3, 3] == 1.0 and errors[1, 0, 0] == 0.25
    assert patch_loss(pred, target).item() == pytest.approx((4.0 + 1.0) / 2)
    assert torch.nn.functional.mse_loss(pred[:1], target[:1]).item() == pytest.approx(16 / 64)  # not the same


def test_patch_loss_averages_channels_within_a_patch_and_refuses_uneven_grids():
    pred = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :1, :1] = 2.0  # channel 0 of the 1x1 patch (0, 0) off by 2; channel 1 exact
    assert patch_loss(pred, target).item() == pytest.approx(2.0)  # (4 + 0) / 2 channels
    assert patch_loss(pred, target, grid=2).item() == pytest.approx(4 / 8)
    with pytest.raises(ValueError, match="4x4 grid"):
        patch_loss(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6))


def test_patch_loss_gradient_reaches_only_the_worst_patch():
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 3, 3], target[0, 0, 0, 0] = 3.0, 1.0
    patch_loss(pred, target).backward()
    grad = pred.grad[0, 0]
    assert grad[3, 3] != 0 and grad[0, 0] == 0 and int((grad != 0).sum()) == 1


def test_the_mean_term_adds_the_whole_map_mse_and_reaches_every_erring_pixel():
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 3, 3], target[0, 0, 0, 0] = 3.0, 1.0
    assert training_loss(pred, target, mean_weight=0.0).item() == patch_loss(pred, target).item() == 9.0
    loss = training_loss(pred, target, mean_weight=0.5)
    assert loss.item() == pytest.approx(9.0 + 0.5 * (9.0 + 1.0) / 16)
    loss.backward()
    grad = pred.grad[0, 0]
    assert grad[3, 3] != 0 and grad[0, 0] != 0 and int((grad != 0).sum()) == 2  # the background's offset too


# ------------------------------------------------------------------------------------------- encoder weights


def torchvision_style(path, name="resnet18"):
    """A torchvision-style classification state dict (3-channel first conv, classifier keys included)."""
    torch.manual_seed(1)
    state = get_encoder(name, in_channels=3, weights=None).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    torch.save(state, path)
    return state


def test_encoder_weights_load_from_a_torchvision_file_and_adapt_the_first_conv(tmp_path):
    state = torchvision_style(tmp_path / "resnet18.pth")
    assert encoder_family(tmp_path / "resnet18.pth") == "resnet"
    model = AppearanceStudent(2, encoder="resnet18")
    info = load_encoder_weights(model.encoder, tmp_path / "resnet18.pth", "resnet18")
    assert info["init"] == "file" and len(info["sha256"]) == 64
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    w = state["conv1.weight"]
    assert torch.allclose(model.encoder.conv1.weight, torch.cat([w, w], 1) * 0.5)  # smp's 6-channel rule


def test_encoder_weights_refuse_a_missing_truncated_or_mismatched_file(tmp_path):
    model = AppearanceStudent(2, encoder="resnet18")
    with pytest.raises(EncoderWeightsError, match="nope.pth: encoder weights file not found"):
        load_encoder_weights(model.encoder, tmp_path / "nope.pth")
    vgg_like = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, vgg_like)
    assert encoder_family(vgg_like) == "vgg"
    with pytest.raises(EncoderWeightsError, match=r"vgg.pth: does not fit the resnet18 encoder: .*missing"):
        load_encoder_weights(model.encoder, vgg_like, "resnet18")
    good = tmp_path / "r18.pth"
    torchvision_style(good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(EncoderWeightsError, match="torn.pth: cannot be read"):
        load_encoder_weights(model.encoder, torn)
    other = AppearanceStudent(2, encoder="resnet34")  # more blocks than the file has
    with pytest.raises(EncoderWeightsError, match="r18.pth: does not fit the resnet34 encoder"):
        load_encoder_weights(other.encoder, good, "resnet34")


class _Pickled:  # a class torch's weights-only reader refuses
    pass


def test_a_pickled_weights_file_is_refused_without_colour_codes_or_advice_to_load_it(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Pickled()}, evil)
    with pytest.raises(EncoderWeightsError) as refused:
        load_encoder_weights(AppearanceStudent(2, encoder="resnet18").encoder, evil)
    message = str(refused.value)
    assert message.startswith(f"{evil}: holds pickled Python code or objects") and "_Pickled" in message
    assert "\x1b" not in message and "weights_only" not in message and "\n" not in message
