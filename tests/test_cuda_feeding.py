"""The GPU feeding path, checked on CPU (issue 21): decode threads that never touch the device, one copy of a
batch's audio to the device, no host-device waits inside the model, one batch queued ahead, defaults and
chunks chosen by device, the current CUDA device set per torchrun rank, IEEE fp32 attention on CUDA."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

import s3tok.bin.tokenize as tokenize_bin
import s3tok.model.tokenizer as tokenizer_mod
import s3tok.stages.features as F
import s3tok.stages.pipeline as P
from conftest import load_expected
from s3tok.data.sources import Utterance
from s3tok.data.wav_scp import WavEntry
from s3tok.model import S3Tokenizer, official_config
from s3tok.model.encoder import sdpa_backends
from test_reference_tokens import compare

MODEL = "speech_tokenizer_v3_25hz"


def random_model(version: str = "speech_tokenizer_v2_25hz", seed: int = 0) -> S3Tokenizer:
    torch.manual_seed(seed)
    m = S3Tokenizer(official_config(version, width=128, heads=2, depth=2))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.dim() >= 2 else 0.1)
    return m.eval()


def entries_of(ref):
    from s3tok.data import read_wav_scp

    return read_wav_scp(ref / "wav.scp")


# ------------------------------------------------------------------ item 1: decode threads, one copy per batch
def test_batch_mel_path_gives_the_reference_tokens(ref, ref_models):
    """Waveforms from the decode threads, log-mels per batch in the main thread: the expected tokens, in
    input order (CPU stands in for the device)."""
    entries = entries_of(ref)
    expected, ties = load_expected(ref, MODEL)
    got, failed = {}, []
    P.run_tokenize(ref_models[MODEL], entries, got.__setitem__, lambda k, r: failed.append((k, r)),
                   batch_size=0, max_frames_per_batch=12000, base_dir=ref, progress=False, batch_mel=True)
    assert not failed and list(got) == [e.key for e in entries]
    compare(MODEL, got, expected, ties, "log-mels per batch")


def test_cpu_log_mels_carried_to_the_device_give_the_cpu_path_tokens(ref, ref_models):
    """The parity check's "CPU log-mel into the device's model" row (tools/bench.py s3tok-fp32-cpumel): log-mels
    from the decode threads on the CPU, carried with each batch: the CPU path's tokens, bit for bit."""
    entries = entries_of(ref)
    runs = {}
    for name, kwargs in (("cpu", {}), ("carried", {"batch_mel": True, "cpu_mel": True})):
        got = {}
        P.run_tokenize(ref_models[MODEL], entries, got.__setitem__, lambda k, r: None, batch_size=0,
                       max_frames_per_batch=12000, base_dir=ref, progress=False, **kwargs)
        runs[name] = got
    assert runs["carried"] == runs["cpu"] and len(runs["cpu"]) == len(entries)


class DeviceSpy:
    """Records, per thread, every attempt to put a tensor on a device: ``.to``/``.cuda``/``.pin_memory``
    naming a non-CPU device, and log-mels computed."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("to", "cuda", "pin_memory"):
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self.wrap(name, real))
        for module in (P, F):  # the tokenize loop, and what the decode threads run
            for name in ("log_mel_spectrogram", "log_mel_batch"):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, self.wrap(name, getattr(module, name), always=True))

    def wrap(self, name, real, always=False):
        def spy(*args, **kwargs):
            targets = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, (str, torch.device))]
            if always or name != "to" or any(torch.device(t).type != "cpu" for t in targets):
                self.calls.append((threading.current_thread().name, name))
            return real(*args, **kwargs)
        return spy

    def in_workers(self):
        return [c for c in self.calls if c[0] != threading.main_thread().name]


def test_decode_threads_never_touch_the_device(ref, monkeypatch):
    """On CUDA the decode threads only decode: CPU waveforms back, no log-mel, nothing moved to a device or
    pinned; each thread's current CUDA device is the model's (set in the pool's initializer)."""
    bound = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: bound.append((threading.current_thread().name, d)))
    spy = DeviceSpy(monkeypatch)
    device = torch.device("cuda", 1)  # never used for work: a CPU-only torch would raise if it were
    plan = P.defaults_for(device, 48000, cores=4)
    chunks = P.cut_chunks(entries_of(ref), P.FeedPlan(0, plan.num_workers, 5, 0.0, True))
    fails, feats = [], []
    for _, f in P.featurized_chunks(chunks, P.feeder(plan, ref, device), plan.num_workers,
                                    lambda k, r: fails.append(k), P.RunStats(), device):
        feats += f
    assert plan.batch_mel and plan.num_workers == 3 and not fails
    assert feats and all(f.mel is None and f.wav.device.type == "cpu" and f.wav.dim() == 1 for f in feats)
    assert all(f.frames == f.wav.numel() // 160 for f in feats)
    assert spy.in_workers() == []
    workers = {name for name, _ in bound}
    assert bound and all(d == device for _, d in bound) and threading.main_thread().name not in workers


def test_one_copy_of_the_audio_per_batch(ref, ref_models, monkeypatch):
    """Each batch's host data crosses once (one call of the copy helper for the audio), and every item of
    every batch is in it."""
    copies, batches = [], []
    real_copy, real_mels = P.to_device_nowait, P.batch_mels
    monkeypatch.setattr(P, "to_device_nowait", lambda t, d: copies.append(t.numel()) or real_copy(t, d))
    monkeypatch.setattr(P, "batch_mels", lambda b, *a: batches.append(sum(f.wav.numel() for f in b))
                        or real_mels(b, *a))
    got = {}
    P.run_tokenize(ref_models[MODEL], entries_of(ref), got.__setitem__, pytest.fail, batch_size=3,
                   max_frames_per_batch=6000, base_dir=ref, progress=False, batch_mel=True)
    assert len(batches) > 1 and copies == batches


def test_a_batch_covered_by_one_forward_is_not_copied():
    """When one forward pass holds the whole batch (items whole, longest first) the batch goes in as it is;
    with windows it is cut into a new one."""
    model = random_model()
    seen = []
    real = model.forward_segments
    model.forward_segments = lambda m, n: seen.append(m) or real(m, n)
    mels = torch.rand(3, 128, 900) * 2 - 1
    mels[1, :, 800:] = 0
    mels[2, :, 700:] = 0
    model.quantize_frames(mels, [900, 800, 700], 6000)
    assert len(seen) == 1 and seen[0] is mels
    seen.clear()
    model.quantize_frames(mels[[1, 0, 2]], [800, 900, 700], 6000)  # not longest first: regrouped
    assert len(seen) == 1 and seen[0].data_ptr() != mels.data_ptr()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_non_finite_log_mel_fails_the_item_on_both_paths(ref, ref_models, tmp_path):
    """Float audio far outside [-1, 1] gives an infinite log-mel: that item fails, with the same reason,
    whether the decode threads or the batch compute the log-mels; its neighbours get their tokens."""
    sf.write(tmp_path / "huge.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    entries = [e for e in entries_of(ref) if e.key in ("en_yes", "cmn_boats")]
    entries = [WavEntry(entries[0].key, str(ref / entries[0].location)), WavEntry("huge", str(tmp_path / "huge.wav")),
               WavEntry(entries[1].key, str(ref / entries[1].location))]
    outcomes = []
    for batch_mel in (False, True):
        got, failed = {}, []
        P.run_tokenize(ref_models[MODEL], entries, got.__setitem__, lambda k, r: failed.append((k, r)),
                       batch_size=0, progress=False, batch_mel=batch_mel)
        outcomes.append((got, failed))
    assert outcomes[0][1] == outcomes[1][1] == [("huge", P.NOT_FINITE_FAILURE)]
    assert list(outcomes[1][0]) == [entries[0].key, entries[2].key]


# ------------------------------------------------------------------ item 2: no waits in the model, one ahead
class DeviceTensor(torch.Tensor):
    """Stands for data on a GPU: reading a value back on the host (a host-device wait) raises."""

    def _wait(self, *args, **kwargs):
        raise AssertionError("host-device wait")

    item = tolist = cpu = numpy = __bool__ = __int__ = __float__ = __index__ = _wait


@pytest.fixture
def fake_device(monkeypatch):
    """Host-to-device copies (the helper) give :class:`DeviceTensor`; everything computed from them is one."""
    monkeypatch.setattr(tokenizer_mod, "to_device_nowait", lambda t, d: t.as_subclass(DeviceTensor))


@pytest.mark.parametrize("version", ["speech_tokenizer_v1", "speech_tokenizer_v2_25hz"])
def test_no_host_device_wait_inside_the_model(version, fake_device):
    """quantize_frames on device data with host lengths never reads a value back: the padding masks are
    decided on the host, lengths and indices go over by the copy helper, windows merge on the device."""
    model = random_model(version)
    lens = [7000, 2999, 3000, 120]  # a windowed item, padded items, an item whose conv output is not padded
    mels = (torch.rand(4, 128, 7000) * 2 - 1).as_subclass(DeviceTensor)
    codes, counts = model.quantize_frames(mels, lens, 6000)
    assert isinstance(codes, torch.Tensor) and counts == [model.num_tokens(7000), model.num_tokens(2999),
                                                          model.num_tokens(3000), model.num_tokens(120)]
    plain, plain_lens = model.quantize(mels.as_subclass(torch.Tensor), torch.tensor(lens), 6000)
    assert torch.equal(codes.as_subclass(torch.Tensor), plain) and plain_lens.tolist() == counts


def test_the_stand_in_catches_a_wait(fake_device):
    """The encoder asked to find the padding itself reads a value back: the stand-in sees it."""
    model = random_model()
    x = torch.rand(2, 128, 300).as_subclass(DeviceTensor)
    with pytest.raises(AssertionError, match="host-device wait"):
        model.encoder(x, torch.tensor([300, 200]).as_subclass(DeviceTensor))
    model.encoder(x, torch.tensor([300, 200]).as_subclass(DeviceTensor), padded=True)


def test_host_padding_decision_matches_the_device():
    """Encoder.output_padded (host) agrees with what forward finds on the device, lengths 1..40 in a batch
    of 40 frames, both conv layouts."""
    for version in ("speech_tokenizer_v1", "speech_tokenizer_v2_25hz"):
        enc = random_model(version).encoder
        s1, s2 = enc.cfg.conv1_stride, enc.cfg.conv2_stride
        for n in range(1, 41):
            device_view = (((torch.tensor([n, 40]) - 1) // s1 + 1 - 1) // s2 + 1)
            assert enc.output_padded([n, 40], 40) == bool(device_view[0] < device_view[1]), (version, n)


def test_next_batch_is_queued_before_tokens_are_read():
    """OneAhead queues batch k+1, then reads batch k; errors are retried in batch order."""
    events = []

    class Queued:
        def __init__(self, batch):
            self.batch = batch

        def tokens(self):
            events.append(("read", self.batch[0].key))
            return [[1] for _ in self.batch]

    def launch(batch):
        events.append(("launch", batch[0].key))
        if batch[0].key == "bad" and len(batch) > 1:
            raise RuntimeError("boom")
        return Queued(batch)

    handled = []
    runner = P.OneAhead(launch, lambda r: handled.extend(f.key for f, _ in r), pytest.fail, P.FaultWatch())
    f = {k: P.Features(k, torch.zeros(128, 10), 0.1) for k in ("a", "bad", "bad2", "c")}
    runner.push([f["a"]], 0)
    runner.push([f["bad"], f["bad2"]], 0)
    assert runner.busy == 0
    runner.push([f["c"]], 1)
    runner.flush()
    assert runner.busy is None
    assert events == [("launch", "a"), ("launch", "bad"), ("read", "a"), ("launch", "c"),
                      ("launch", "bad"), ("read", "bad"), ("launch", "bad2"), ("read", "bad2"), ("read", "c")]
    assert handled == ["a", "bad", "bad2", "c"]


def test_chunks_wait_for_their_batch_in_flight():
    """A chunk's tokens are written, in input order, once its last batch has been read."""
    written = []
    order = P.InOrder(lambda k, t: written.append(k))
    chunk0, chunk1 = [Utterance("b"), Utterance("a")], [Utterance("c")]
    order.done.update(a=[1], b=[2])
    order.close(0, chunk0)
    order.write_ready(busy=0)
    assert written == []
    order.close(1, chunk1)
    order.write_ready(busy=1)
    assert written == ["b", "a"]
    order.done["c"] = [3]
    order.write_ready(busy=None)
    assert written == ["b", "a", "c"]


# ------------------------------------------------------------------ item 3: defaults and chunks by device
def test_defaults_follow_the_device():
    cpu = P.defaults_for("cpu", 6000, cores=64)
    assert (cpu.batch_size, cpu.num_workers, cpu.chunk_size, cpu.batch_mel) == (16, 2, 128, False)
    gpu = P.defaults_for(torch.device("cuda", 0), 48000, cores=16)
    assert (gpu.batch_size, gpu.num_workers, gpu.chunk_size, gpu.batch_mel) == (0, 8, 0, True)
    assert gpu.chunk_seconds == P.CHUNK_FORWARDS * 480.0
    assert P.defaults_for("cuda", 48000, cores=4).num_workers == 3
    assert P.defaults_for("cuda", 48000, cores=1).num_workers == 1
    mine = P.defaults_for("cuda:1", 48000, batch_size=32, num_workers=2, chunk_size=100, cores=16)
    assert (mine.batch_size, mine.num_workers, mine.chunk_size) == (32, 2, 100)
    assert P.defaults_for("cpu", 6000, batch_size=4, num_workers=5).chunk_size == 64


def test_cpu_chunks_of_long_files_end_at_an_hour_of_audio():
    """CPU chunks were 128 utterances whatever their length: 128 ten-minute files held 3.9 GB of log-mels,
    twice over with the next chunk decoding. Now a chunk also ends at about an hour of audio; chunks of
    short clips are as before (the same batches, the same bits)."""
    plan = P.defaults_for("cpu", 6000)
    long = [Utterance(f"l{i}", recording=WavEntry("r", "r.wav"), segment=True, start=0.0, end=600.0)
            for i in range(40)]
    assert [len(c) for c in P.cut_chunks(long, plan)] == [6] * 6 + [4]
    short = [Utterance(f"s{i}", recording=WavEntry("r", "r.wav"), segment=True, start=0.0, end=8.0)
             for i in range(300)]
    assert [len(c) for c in P.cut_chunks(short, plan)] == [128, 128, 44]


def test_cli_leaves_batch_size_and_workers_to_the_device():
    args = tokenize_bin.get_parser().parse_args(["--wav_scp", "x", "--model", "m", "--output_dir", "o"])
    assert args.batch_size is None and args.num_workers is None


def test_chunks_by_audio_duration(tmp_path):
    """On a GPU chunks hold about ``chunk_seconds`` of audio (estimated before decoding: segments, file
    sizes against base_dir, members), not a multiple of the batch size: the first is not most of the set."""
    segs = [Utterance(f"u{i}", recording=WavEntry("r", "r.wav"), segment=True, start=0.0, end=5.0)
            for i in range(100)]
    plan = P.FeedPlan(0, 1, 0, 20.0, True)
    chunks = P.cut_chunks(segs, plan)
    assert [len(c) for c in chunks] == [4] * 25 and [u for c in chunks for u in c] == segs
    (tmp_path / "a.wav").write_bytes(b"\0" * 32000 * 3)  # ~3 s
    files = [WavEntry(f"f{i}", "a.wav") for i in range(10)] + [WavEntry("pipe", "cat x |")]
    assert P.estimated_seconds(files[0], tmp_path) == 3.0 and P.estimated_seconds(files[-1]) == 1.0
    assert [len(c) for c in P.cut_chunks(files, P.FeedPlan(0, 1, 0, 9.0, True), tmp_path)] == [3, 3, 3, 2]
    hours = [Utterance(f"h{i}", recording=WavEntry("r", "r.wav"), segment=True, start=0.0, end=4.5)
             for i in range(8000)]  # 10 h of 4.5 s utterances
    sizes = [len(c) for c in P.cut_chunks(hours, P.defaults_for("cuda", 48000, cores=8))]
    assert len(sizes) >= 15 and max(sizes) <= len(hours) / 10


# ------------------------------------------------------------------ item 4: attention on CUDA fp32
def test_cuda_fp32_attention_uses_the_math_backend(monkeypatch):
    from torch.nn.attention import SDPBackend

    assert sdpa_backends(torch.device("cuda", 0), torch.float32) == [SDPBackend.MATH]
    assert sdpa_backends(torch.device("cuda", 0), torch.bfloat16) is None
    assert sdpa_backends(torch.device("cpu"), torch.float32) is None
    import s3tok.model.encoder as encoder

    asked = []
    monkeypatch.setattr(encoder, "sdpa_backends", lambda d, t: asked.append((d.type, t)) or None)
    model = random_model()
    model.quantize(torch.rand(2, 128, 200), torch.tensor([200, 150]))
    assert asked and set(asked) == {("cpu", torch.float32)}


# ------------------------------------------------------------------ item 5: torchrun
@pytest.fixture
def fake_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    return calls


def test_pick_device_sets_the_rank_gpu(fake_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert tokenize_bin.pick_device("cuda") == torch.device("cuda", 3) and fake_cuda == [torch.device("cuda", 3)]
    assert tokenize_bin.pick_device("cuda:1") == torch.device("cuda", 1) and fake_cuda[-1] == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert tokenize_bin.pick_device("cuda") == torch.device("cuda", 0)
    fake_cuda.clear()
    assert tokenize_bin.pick_device("cpu") == torch.device("cpu") and fake_cuda == []


def test_main_sets_the_device_before_loading(fake_cuda, monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_RANK", "1")
    seen = []

    def load_model(name, device, dtype):
        seen.append((device, list(fake_cuda)))
        raise ValueError("stop here")

    monkeypatch.setattr(tokenize_bin, "load_model", load_model)
    scp = tmp_path / "wav.scp"
    scp.write_text("a a.wav\n")
    rc = tokenize_bin.main(["--wav_scp", str(scp), "--model", "m", "--output_dir", str(tmp_path / "o"),
                            "--device", "cuda", "--no_progress"])
    assert rc == 2 and seen == [(torch.device("cuda", 1), [torch.device("cuda", 1)])]
