"""The plain linear weights mapped from the converted file do not stay resident beside oneDNN's reordered
copy; pages written in place, anonymous memory and the values themselves are never touched."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Tuple

import pytest
import torch

import s3tok
from s3tok.model import linear as lin
from s3tok.modelfiles import hub
from s3tok.modelfiles.onnx_export import random_model
from s3tok.util import file_pages
from s3tok.util.file_pages import release_file_pages

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or not os.access("/proc/self/pagemap", os.R_OK),
                                reason="needs Linux's /proc/self/pagemap")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def mapped_rss(path: Path) -> int:
    """Bytes of ``path`` resident in this process (its mappings' Rss in /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


def file_tensor(tmp_path: Path, n: int) -> Tuple[torch.Tensor, Path]:
    """``n`` float32 values 0..n-1 written to a file, and a tensor mapped from it (private, copy on write)."""
    path = tmp_path / "w.bin"
    torch.arange(n, dtype=torch.float32).numpy().tofile(path)
    return torch.from_file(str(path), shared=False, size=n, dtype=torch.float32), path


def test_resident_file_pages_are_released_and_read_back_unchanged(tmp_path):
    n = 4 << 20  # 16 MB
    t, path = file_tensor(tmp_path, n)
    assert torch.equal(t.clone(), torch.arange(n, dtype=torch.float32))  # every page read: resident
    assert mapped_rss(path) >= n * 4 - PAGE
    released = release_file_pages(t)
    assert released >= n * 4 - 2 * PAGE
    assert mapped_rss(path) <= 2 * PAGE
    assert torch.equal(t, torch.arange(n, dtype=torch.float32))  # faulted back from the file


def test_pages_written_in_place_keep_their_values(tmp_path):
    """A page written to is this process's private copy: releasing it would bring back the file's values."""
    n = 4 << 20
    t, path = file_tensor(tmp_path, n)
    t.sum()
    head = (1 << 20) // 4  # the first MB
    t[:head] = -1.0
    released = release_file_pages(t)
    assert released <= n * 4 - (1 << 20)
    expected = torch.arange(n, dtype=torch.float32)
    expected[:head] = -1.0
    assert torch.equal(t, expected)


def test_anonymous_memory_is_left_alone():
    t = torch.randn(4 << 20)
    copy = t.clone()
    assert release_file_pages(t) == 0
    assert torch.equal(t, copy)


def test_the_environment_keeps_every_page(tmp_path, monkeypatch):
    t, path = file_tensor(tmp_path, 1 << 20)
    t.sum()
    monkeypatch.setenv(file_pages.ENV, "0")
    assert release_file_pages(t) == 0
    assert mapped_rss(path) >= (1 << 22) - PAGE


@pytest.mark.parametrize("release", ["1", "0"])
def test_a_model_from_a_converted_folder_keeps_one_copy_resident(tmp_path, monkeypatch, release):
    """Loaded from safetensors (memory-mapped), run with a oneDNN kernel: the linear weights' file pages
    are released (and the tokens are those of a model that keeps them)."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN linear")
    monkeypatch.setattr(lin, "_chosen", {(torch.float32, 512): "onednn"})
    monkeypatch.setenv(file_pages.ENV, release)
    src = random_model("speech_tokenizer_v2_25hz", width=512, depth=2)
    folder = hub.save_converted(tmp_path / "conv", src.config.to_dict(),
                                {k: v.detach() for k, v in src.state_dict().items()}, {})
    model = s3tok.load_model(folder)
    mels = torch.randn(2, 128, 900, generator=torch.Generator().manual_seed(0))
    codes, lens = model.quantize(mels, torch.tensor([900, 700]))
    want, want_lens = src.quantize(mels, torch.tensor([900, 700]))
    assert torch.equal(codes, want) and torch.equal(lens, want_lens)
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear)
                       and m.weight.numel() * 4 >= file_pages.MIN_BYTES)
    assert linear_bytes >= 20 << 20
    resident = mapped_rss(folder / "model.safetensors")
    total = (folder / "model.safetensors").stat().st_size
    if release == "1":
        assert resident <= total - linear_bytes + (1 << 20)
    else:
        assert resident >= linear_bytes


def test_the_page_map_is_read_in_bounded_pieces(tmp_path, monkeypatch):
    """Runs that cross a read's boundary are still all released (as two runs)."""
    monkeypatch.setattr(file_pages, "PAGEMAP_CHUNK", 100)
    n = 4 << 20
    t, path = file_tensor(tmp_path, n)
    t.sum()
    assert release_file_pages(t) >= n * 4 - 2 * PAGE
    assert mapped_rss(path) <= 2 * PAGE
    assert torch.equal(t, torch.arange(n, dtype=torch.float32))
