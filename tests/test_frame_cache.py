"""The per-run frame cache: each frame decoded once, at the size the transform asks for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipmg.data import frame_cache
from clipmg.data.frame_cache import FrameCache
from clipmg.data.images import fit_frame
from clipmg.data.transforms import create_transform


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(320, 240), (240, 320), (50, 40)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_fit_frame_crops_the_long_side_and_never_enlarges():
    wide = fit_frame(np.zeros((240, 640, 3), np.uint8), 60)
    assert wide.shape == (60, 75, 3)
    tall = fit_frame(np.zeros((640, 240, 3), np.uint8), 60)
    assert tall.shape == (75, 60, 3)
    assert fit_frame(np.zeros((40, 50, 3), np.uint8), 60).shape == (40, 50, 3)


def test_each_frame_is_decoded_once_and_read_back_unchanged(photos, monkeypatch):
    decoded = []
    real = frame_cache.load_image
    monkeypatch.setattr(frame_cache, "load_image", lambda path, max_size=None: decoded.append(path) or
                        real(path, max_size=max_size))
    cache = FrameCache(photos, size=64)
    first = [cache.get(i) for i in range(len(photos))]
    again = [cache.get(i) for i in range(len(photos))]
    assert decoded == photos
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first[0].shape == (64, 80, 3) and first[2].shape == (40, 50, 3)


def test_a_pickled_cache_shares_what_was_decoded(photos):
    import pickle

    cache = FrameCache(photos, size=64)
    frame = cache.get(1)
    copy = pickle.loads(pickle.dumps(cache))  # what a DataLoader worker receives
    np.testing.assert_array_equal(copy.get(1), frame)
    copy.get(0)
    np.testing.assert_array_equal(cache.get(0), copy.get(0))


def test_the_cache_folder_goes_with_the_cache(photos):
    import gc

    cache = FrameCache(photos, size=32)
    folder = cache.folder
    assert folder.is_dir()
    del cache
    gc.collect()
    assert not folder.exists()


def test_a_training_frame_is_the_same_from_the_cache_and_from_the_file():
    """The training transform shrinks a large frame as the cache does, so the cache changes the
    time of a run, not its pixels."""
    transform = create_transform(48, train=True, normalize=False)
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    cached = fit_frame(frame, transform.decode_size)
    for seed in range(5):
        transform.set_random_seed(seed)
        from_file = transform(frame)
        transform.set_random_seed(seed)
        assert np.array_equal(from_file.numpy(), transform(cached).numpy())
