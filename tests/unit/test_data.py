"""Training patches: cut with their flips in one gather, degraded as a batch, on any device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossagent_env.data import PatchSampler, load_dataset
from lossagent_env.tasks import BicubicDownsample, GaussianNoise, JPEGCompression
from measure.perf_data import reference_sample


def _reference(sampler: PatchSampler, n: int, rng: np.random.Generator) -> torch.Tensor:
    """The targets patch by patch, as written (the per-patch reference of perf_data)."""
    return reference_sample(sampler, n, rng, torch.Generator())[1]


@pytest.fixture(scope="module")
def images():
    return load_dataset("skimage")


@pytest.mark.parametrize("scale", [2, 4])
def test_patches_are_the_written_cut_and_flips(images, scale):
    sampler = PatchSampler(images.train, 32, BicubicDownsample(scale))
    inputs, targets = sampler.sample(300, np.random.default_rng(5), torch.Generator().manual_seed(5))
    assert torch.equal(targets, _reference(sampler, 300, np.random.default_rng(5)))
    assert inputs.shape == (300, 3, 32 // scale, 32 // scale)
    assert torch.equal(inputs, BicubicDownsample(scale)(targets, torch.Generator()))


def test_paired_inputs_are_cut_with_the_same_flips(images):
    lr = [BicubicDownsample(2)(im[None], torch.Generator())[0] for im in images.train]
    sampler = PatchSampler(images.train, 32, BicubicDownsample(2), lr_images=lr)
    inputs, targets = sampler.sample(50, np.random.default_rng(1), torch.Generator())
    # Each input is the paired image's patch at the same place, flipped the same way:
    # here the pairs are bicubic down-samplings, so the two agree to rounding.
    expected = BicubicDownsample(2)(targets, torch.Generator())
    assert (inputs - expected).abs().max() < 0.08
    assert (inputs - expected).abs().mean() < 0.01


def test_jpeg_in_threads_equals_one_by_one():
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((300, 3, 32, 32), dtype=np.float32))
    jpeg = JPEGCompression(20)
    out = jpeg(batch, torch.Generator())
    one_by_one = torch.cat([jpeg(batch[i : i + 1], torch.Generator()) for i in range(len(batch))])
    assert torch.equal(out, one_by_one)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_patches_on_the_gpu_equal_those_on_the_cpu(images):
    cpu = PatchSampler(images.train, 32, BicubicDownsample(2))
    gpu = PatchSampler(images.train, 32, BicubicDownsample(2)).to("cuda")
    _, hr_cpu = cpu.sample(200, np.random.default_rng(2), torch.Generator())
    lr_gpu, hr_gpu = gpu.sample(200, np.random.default_rng(2), torch.Generator())
    assert hr_gpu.is_cuda and lr_gpu.is_cuda
    assert torch.equal(hr_gpu.cpu(), hr_cpu)
    noise = GaussianNoise(25)
    first = noise(hr_gpu, torch.Generator().manual_seed(3))
    again = noise(hr_gpu, torch.Generator().manual_seed(3))
    assert first.is_cuda and torch.equal(first, again)
