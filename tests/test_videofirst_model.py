"""The masked video-first encoder: inflation from CLIP, masks, attention variants, long inputs, checkpoints."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vfeval_videofirst.config import VideoFirstConfig, num_patch_tokens, token_grid  # noqa: E402
from vfeval_videofirst.masking import (  # noqa: E402
    block_masking,
    draw_keep,
    mask_rng,
    num_kept,
    random_masking,
    tube_masking,
)
from vfeval_videofirst.torch.encoder import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    make_encoder,
    save_checkpoint,
)

from vfeval.errors import UsageError  # noqa: E402

PROJ = 16


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP (vision: the ``tiny`` variant, 32 px, 8 px patches) with a character tokenizer."""
    from vfeval.testing_models import build_clip

    return build_clip(tmp_path_factory.mktemp("clip"), width=64, vision_mlp=256, text_width=32, projection=PROJ)


def clip_cfg(clip_dir, **kw) -> VideoFirstConfig:
    base = dict(
        variant="tiny",
        tubelet=(2, 8, 8),
        image_size=32,
        embed_dim=PROJ,
        init="clip",
        clip_model=str(clip_dir),
        text="clip",
        device="cpu",
    )
    return VideoFirstConfig(**{**base, **kw})


def scratch_cfg(**kw) -> VideoFirstConfig:
    base = dict(
        variant="tiny",
        tubelet=(2, 8, 8),
        image_size=32,
        embed_dim=PROJ,
        init="none",
        text="bytes",
        device="cpu",
    )
    return VideoFirstConfig(**{**base, **kw})


def clip_image_embedding(clip_dir, frame: np.ndarray) -> np.ndarray:
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    x = (frame.astype(np.float32) / 255 - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    with torch.inference_mode():
        out = clip.get_image_features(pixel_values=torch.from_numpy(x).permute(2, 0, 1)[None])
    return getattr(out, "pooler_output", out).numpy()


# -- inflation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["joint", "factorised"])
@pytest.mark.parametrize("inflation", ["central", "average"])
def test_static_video_through_inflated_encoder_gives_clip_image_embedding(clip_dir, inflation, attention):
    frame = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = clip_image_embedding(clip_dir, frame)
    encoder = make_encoder(clip_cfg(clip_dir, inflation=inflation, attention=attention))
    for frames in (2, 4):
        got = encoder.embed_video([np.repeat(frame[None], frames, axis=0)])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_inflated_text_tower_is_clips(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    texts = ["a dog runs.", "cooking pasta"]
    tokens = AutoTokenizer.from_pretrained(clip_dir)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = clip.get_text_features(**tokens)
    expected = getattr(out, "pooler_output", out).numpy()
    np.testing.assert_allclose(make_encoder(clip_cfg(clip_dir)).embed_text(texts), expected, atol=1e-5)


def test_mismatched_variant_or_missing_clip_is_a_usage_error(clip_dir, tmp_path):
    with pytest.raises(UsageError, match="variant's width"):
        make_encoder(clip_cfg(clip_dir, variant="S"))
    with pytest.raises(UsageError, match="cannot fetch CLIP weights"):
        make_encoder(clip_cfg(clip_dir, clip_model=str(tmp_path / "nowhere")))


# -- masks ----------------------------------------------------------------------------------------------

GRID = (8, 4, 4)  # nt, nh, nw: 128 tokens


@pytest.mark.parametrize("ratio,kept", [(0.0, 128), (0.5, 64), (0.75, 32), (0.9, 12)])
def test_masks_keep_exactly_num_kept_tokens(ratio, kept):
    assert num_kept(128, ratio) == kept
    g = mask_rng(0)
    for fn, n in ((random_masking, kept), (block_masking, kept), (tube_masking, 8 * num_kept(16, ratio))):
        keep = fn(3, GRID, ratio, g)
        assert keep.shape == (3, n)
        for row in keep:
            assert len(set(row.tolist())) == n and row.min() >= 0 and row.max() < 128
            assert keep.dtype == np.int64 and np.array_equal(row, np.sort(row))


def test_tube_masks_keep_the_same_positions_in_every_slice():
    keep = tube_masking(4, GRID, 0.75, mask_rng(0))
    space = keep.reshape(4, 8, -1) % 16  # [B, nt, S_keep]
    assert np.array_equal(space, np.broadcast_to(space[:, :1], space.shape))
    assert np.array_equal(keep.reshape(4, 8, -1) // 16, np.broadcast_to(np.arange(8)[None, :, None], (4, 8, 4)))


def test_block_masks_reach_the_ratio_in_contiguous_blocks():
    keep = block_masking(16, GRID, 0.5, mask_rng(0))
    masked = np.ones((16, 128), dtype=bool)
    masked[np.arange(16)[:, None], keep] = False
    assert (masked.sum(1) == 64).all()
    # Cuboids span several slices: a masked token's next slice is masked far more often than by chance (0.5).
    m = masked.reshape(16, *GRID)
    assert (m[:, 1:] & m[:, :-1]).sum() / m[:, :-1].sum() > 0.7


@pytest.mark.parametrize("fn", [random_masking, tube_masking, block_masking])
def test_masks_follow_the_generator_and_differ_within_a_batch(fn):
    a = fn(4, GRID, 0.75, mask_rng(7))
    b = fn(4, GRID, 0.75, mask_rng(7))
    c = fn(4, GRID, 0.75, mask_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 4


# -- model ----------------------------------------------------------------------------------------------


def test_only_kept_tokens_enter_the_transformer():
    model = make_encoder(scratch_cfg(mask="random", mask_ratio=0.75)).model.video
    video = torch.randn(2, 3, 16, 32, 32)
    nt, nh, nw = token_grid(scratch_cfg())
    n = num_patch_tokens(scratch_cfg())
    model.train()
    x, _ = model.tokens(video, generator=mask_rng(0))
    assert x.shape == (2, nt + num_kept(n, 0.75), 64)  # one class token per slice + kept patches
    model.eval()  # masks apply only while training (unless mask_at_eval)
    assert model.tokens(video)[0].shape == (2, nt + n, 64)



@pytest.mark.parametrize("frames", [16, 17])  # 17: the last frame is beyond the last whole tubelet, as in the conv
def test_kept_tubelets_embed_as_the_convolution_then_gather(frames):
    """Masked training embeds only the kept tubelets: the same tokens as embedding all and keeping some."""
    model = make_encoder(scratch_cfg(mask="random", mask_ratio=0.75)).model.video
    with torch.no_grad():
        model.pos_time.normal_()
    video = torch.randn(2, 3, frames, 32, 32)
    grid = (frames // 2, 4, 4)
    keep = torch.from_numpy(draw_keep("random", 0.75, 2, grid, mask_rng(3)))
    expected = model.embed(video).flatten(1, 3).gather(1, keep[:, :, None].expand(-1, -1, 64))
    got = model.embed.kept(video, keep, grid)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The kernel's gradient, which the kept path computes by gathering the pixels again, is the convolution's.
    weights = torch.randn_like(got)
    (kernel_grad,) = torch.autograd.grad((expected * weights).sum(), model.embed.proj.weight)
    (kept_grad,) = torch.autograd.grad((got * weights).sum(), model.embed.proj.weight)
    torch.testing.assert_close(kept_grad, kernel_grad, rtol=1e-4, atol=1e-4)
    # and the sequence the transformer gets: class tokens, then the kept tokens with their positions
    everything, nt = model.tokens(video, keep=torch.arange(grid[0] * 16).expand(2, -1))
    kept, _ = model.tokens(video, keep=keep)
    torch.testing.assert_close(kept[:, :nt], everything[:, :nt])
    torch.testing.assert_close(
        kept[:, nt:], everything[:, nt:].gather(1, keep[:, :, None].expand(-1, -1, 64)), rtol=1e-5, atol=1e-5
    )

@pytest.mark.parametrize(
    "attention,mask",
    [
        ("joint", "none"),
        ("joint", "random"),
        ("joint", "block"),
        ("factorised", "none"),
        ("factorised", "tube"),
    ],
)
def test_forward_and_backward_shapes(attention, mask):
    model = make_encoder(scratch_cfg(attention=attention, mask=mask, mask_ratio=0.5)).model.train()
    out = model.video(torch.randn(2, 3, 8, 32, 32), generator=mask_rng(0))
    assert out.shape == (2, PROJ)
    out.square().sum().backward()
    assert model.video.embed.proj.weight.grad is not None


def test_factorised_attention_refuses_masks_that_break_its_grid():
    with pytest.raises(UsageError, match="factorised"):
        make_encoder(scratch_cfg(attention="factorised", mask="random", mask_ratio=0.5))


def test_other_frame_counts_interpolate_temporal_embeddings():
    encoder = make_encoder(scratch_cfg(num_frames=16))
    with torch.no_grad():
        encoder.model.video.pos_time.normal_()
    clips = [
        np.random.default_rng(0).integers(0, 256, (t, 32, 32, 3), dtype=np.uint8) for t in (5, 8, 16, 40)
    ]
    out = encoder.embed_video(clips)
    assert out.shape == (4, PROJ) and np.isfinite(out).all()


def test_masks_at_evaluation_do_not_depend_on_the_batch():
    encoder = make_encoder(scratch_cfg(mask="block", mask_ratio=0.5, mask_at_eval=True))
    clips = [np.random.default_rng(i).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for i in range(3)]
    together = encoder.embed_video(clips)
    alone = np.concatenate([encoder.embed_video([c]) for c in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    unmasked = make_encoder(scratch_cfg(mask="block", mask_ratio=0.5)).embed_video(clips)
    assert not np.allclose(together, unmasked, atol=1e-3)


def test_thirty_thousand_tokens_run_in_inference():
    cfg = scratch_cfg(image_size=64, text="none")
    frames = 2 * -(-30_000 // (8 * 8))  # 64 tokens per slice of 2 frames
    assert num_patch_tokens(cfg, frames) >= 30_000
    clip = np.random.default_rng(0).integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    out = make_encoder(cfg).embed_video([clip])
    assert out.shape == (1, PROJ) and np.isfinite(out).all()


# -- checkpoints and plugin -----------------------------------------------------------------------------


def test_safetensors_round_trip_gives_identical_embeddings(tmp_path):
    cfg = scratch_cfg(attention="factorised", seed=3)
    first = make_encoder(cfg)
    with torch.no_grad():  # trained-looking weights, so a load that silently re-initialises would show
        for p in first.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.safetensors"
    save_checkpoint(first.model, path, cfg)
    second = make_encoder(scratch_cfg(attention="factorised", checkpoint=str(path)))
    clips = [np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)]
    np.testing.assert_array_equal(first.embed_video(clips), second.embed_video(clips))
    np.testing.assert_array_equal(first.embed_text(["a cat"]), second.embed_text(["a cat"]))
    import hashlib

    assert second.fingerprint()["weights"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.fingerprint() != second.fingerprint()


def test_checkpoint_with_a_wrong_key_is_a_usage_error(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = scratch_cfg()
    path = tmp_path / "model.safetensors"
    save_checkpoint(make_encoder(cfg).model, path, cfg)
    tensors = load_file(str(path))
    tensors["video.not_a_weight"] = tensors.pop("video.pos_time")
    save_file(tensors, str(path))
    with pytest.raises(UsageError, match="missing 'video.pos_time'.*unexpected 'video.not_a_weight'"):
        make_encoder(scratch_cfg(checkpoint=str(path)))
    with pytest.raises(UsageError, match="checkpoint not found"):
        make_encoder(scratch_cfg(checkpoint=str(tmp_path / "absent.safetensors")))


def test_plugin_registers_without_importing_torch():
    code = (
        "import sys; from vfeval.plugins import get_plugin_manager; "
        "host = get_plugin_manager(); spec = host.registry.encoders['videofirst']; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(spec.factory)"
    )
    env_run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "VFEVAL_PLUGINS": "videofirst"},
    )
    assert env_run.returncode == 0, env_run.stderr
    assert env_run.stdout.strip() == "vfeval_videofirst.factory:make_encoder"
