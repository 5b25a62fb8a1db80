"""The CuPy code paths, run on a CPU through a simulated CuPy (tests/simulated_cupy): no GPU needed.

A GPU comes to this project only now and then, so the CuPy backend must be right before one runs it.
``tests/simulated_cupy`` is a stand-in ``cupy`` package: NumPy underneath, CuPy's rules on top (a device
array refuses ``np.asarray``, a host array in a device operation is a TypeError, reading a value back is
counted as a synchronisation...). Each test here runs in a child process with that package first on the
path and ``TINYLLM_BACKEND=cupy``, so tinyllm's real ``CupyBackend`` runs on it (with
``TINYLLM_KERNELS=0``: the CUDA kernels have their own GPU tests, ``tests/test_cuda_kernels.py``). The
test process itself never imports the stand-in, so nothing else here mistakes it for CuPy.

Run any test file the same way::

    PYTHONPATH=$PWD/tests/simulated_cupy:$PWD TINYLLM_BACKEND=cupy TINYLLM_KERNELS=0 python -m pytest tests/test_model.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, child_pythonpath, shakespeare_text

SIMULATED = REPO_ROOT / "tests" / "simulated_cupy"


def simulated_env(kernels: bool = False) -> dict[str, str]:
    """The stand-in first on the path; its CUDA kernels (run on the CPU, slowly) only when asked."""
    path = os.pathsep.join([str(SIMULATED), child_pythonpath()])  # the stand-in first, then what children get
    return {**os.environ, "PYTHONPATH": path, "TINYLLM_BACKEND": "cupy", "TINYLLM_KERNELS": "1" if kernels else "0",
            "OPENBLAS_NUM_THREADS": "1"}


def run_python(code: str, *args: str, timeout: int = 120, cwd=REPO_ROOT,  # noqa: ANN001
               kernels: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                            env=simulated_env(kernels), cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_the_stand_in_enforces_cupys_rules() -> None:
    code = r'''
import numpy as np, cupy, cupyx
assert cupy.SIMULATED
a = cupy.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
host = np.ones(3, np.float32)

def raises(kind, f):
    try:
        f()
    except kind as error:
        return str(error)
    raise AssertionError(f"no {kind.__name__}")

assert "Implicit conversion" in raises(TypeError, lambda: np.asarray(a))
assert "Unsupported type" in raises(TypeError, lambda: a + host)            # a host array in a device op
assert "Unsupported type" in raises(TypeError, lambda: cupy.where(a > 1, host, 0))
assert "fill" in raises(ValueError, lambda: a.__setitem__((0, slice(None)), host))
assert "wraps" in raises(IndexError, lambda: a[cupy.asarray(np.array([5]))])
assert "has no attribute" in raises(AttributeError, lambda: cupy.random.Generator(cupy.random.Philox4x3210(0)).normal)
assert "has no attribute" in raises(AttributeError, lambda: a.ctypes)    # NumPy's, not CuPy's
assert not hasattr(cupy.random.Philox4x3210(0), "state")                # nothing to save in a checkpoint
s = a.sum()
assert isinstance(s, cupy.ndarray) and s.shape == ()                     # a 0-d device array, not a number
assert isinstance(np.exp(a), cupy.ndarray)                                # NumPy's ufuncs dispatch to the device
cupy.reset_counts()
float(s); a.get(); bool(a[0, 0] > 0)
assert dict(cupy.transfers) == {"sync": 2, "to_host": 1}, cupy.transfers
t = cupy.zeros(3, dtype=np.float32)
cupyx.scatter_add(t, cupy.asarray(np.array([0, 2, 0])), cupy.asarray(np.array([1.0, 2.0, 3.0], np.float32)))
assert t.tolist() == [4.0, 0.0, 2.0]
import tinyllm as tl
assert tl.get_backend().name == "cupy" and "simulated" in tl.get_backend().device_name()
print("ok")
'''
    assert run_python(code).stdout.strip() == "ok"


def test_host_index_arrays_go_to_the_device_and_repeated_rows_add_their_gradients() -> None:
    code = r'''
import numpy as np, tinyllm as tl
from tinyllm.nn import functional as F
x = tl.tensor(np.arange(6, dtype=np.float32).reshape(3, 2), requires_grad=True)
x[np.array([0, 0, 2])].sum().backward()                     # row 0 taken twice: its gradient is 2
assert tl.get_backend().to_host(x.grad).tolist() == [[2, 2], [0, 0], [1, 1]], x.grad  # grad: an array
logits = tl.tensor(np.zeros((2, 4), np.float32), requires_grad=True)
loss = F.cross_entropy(logits, np.array([1, 3]))             # NumPy targets, device logits
assert abs(loss.item() - np.log(4)) < 1e-6
print("ok")
'''
    assert run_python(code).stdout.strip() == "ok"


# Test code (for run_python) that counts every value read back from the simulated device, by the place in
# tinyllm that asked for it, in ``where`` ("train.py:_read_back": 1, ...).
COUNT_READS = r'''
import collections, traceback
import cupy
where = collections.Counter()
def place():  # the innermost tinyllm frame outside the backend: where the library asked for the value
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if "/tinyllm/" in name and "/simulated_cupy/" not in name and not name.endswith("cupy_backend.py"):
            return name.rsplit("/tinyllm/", 1)[-1] + ":" + frame.name
    return "elsewhere"
for method in ("_sync_read", "get"):
    original = getattr(cupy.ndarray, method)
    def counted(self, *args, _original=original, **kwargs):
        where[place()] += 1
        return _original(self, *args, **kwargs)
    setattr(cupy.ndarray, method, counted)
'''


def test_a_training_step_reads_back_from_the_device_once() -> None:
    """A step's synchronisations, counted by where they happen: a new one must be added here on purpose.

    A step reads ONE transfer, whatever its number of micro-batches (float32 and float16 alike): the
    losses, the squared gradient norm, float16's overflow flag and the flags of the checks that every
    token id (checked once, by the embedding table) and every target (the loss's) is in range, which wait for it
    (tinyllm.backends.deferred). It used to read 4 values per micro-batch and 1 per step, each a wait for
    the GPU. No array is copied to the device either (the batches come on it; ``loss * 0.5`` makes its 0.5
    there).
    """
    code = r'''
import collections, json, traceback
import numpy as np, cupy, tinyllm as tl
from tinyllm.amp import MixedPrecision
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, configure_optimizer, train_step
tl.set_backend("cupy", seed=0)
rng = np.random.default_rng(0)
batches = [(ids[:, :-1], ids[:, 1:]) for ids in (tl.get_backend().asarray(rng.integers(0, 64, (4, 17))) for _ in range(2))]
''' + COUNT_READS + r'''
rows = {}
for dtype in ("float32", "float16"):
    model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16,
                                    dropout=0.1))
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
    amp = MixedPrecision(model, dtype) if dtype != "float32" else None
    train_step(model, optimizer, batches[:1], 1e-2, 1.0, amp=amp)   # the first step creates AdamW's state
    for n in (1, 2):
        cupy.reset_counts(); where.clear()
        train_step(model, optimizer, batches[:n], 1e-2, 1.0, amp=amp)
        rows[f"{dtype} {n}"] = {"transfers": dict(cupy.transfers), "where": dict(where)}
print(json.dumps(rows))
'''
    rows = json.loads(run_python(code, kernels=True, timeout=600).stdout)  # with the kernels, as on a GPU
    assert set(rows) == {"float32 1", "float32 2", "float16 1", "float16 2"}, rows
    for row in rows.values():
        assert row["where"] == {"train.py:_read_back": 1}, row
        assert row["transfers"].get("to_host") == 1 and "sync" not in row["transfers"], row
        # The only copies to the device are the multi-tensor kernels' tables (pointers, offsets, hyperparameters:
        # a few hundred bytes each, which CuPy stages through pinned memory without waiting): the batches were there.
        assert row["transfers"].get("to_device", 0) <= 20, row


def test_a_bad_token_id_found_by_a_deferred_check_stops_the_step_before_the_update() -> None:
    """On a GPU an out-of-range id reads another row silently, and inside train_step its check waits for the
    step's one read: the forward and backward run, but the error comes before the update, naming the id,
    and the weights are as they were. The same IndexError as outside a step (where it is read at once)."""
    code = r'''
import numpy as np, cupy, tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, configure_optimizer, train_step
cupy.out_of_range = "wrap"  # as on a GPU: the gathers wrap the bad id around, and only the checks can tell
backend = tl.set_backend("cupy", seed=0)
model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, max_seq_len=16))
optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
ids = np.random.default_rng(0).integers(0, 64, (2, 9))
good = backend.asarray(ids)
train_step(model, optimizer, [(good[:, :-1], good[:, 1:])], 1e-2, 1.0)
before = {k: backend.to_host(v).copy() for k, v in model.state_dict().items()}
messages = []
for where in ("input", "target"):
    bad = ids.copy()
    bad[1, 3 if where == "input" else 8] = 70  # 70 >= vocab_size 64
    bad = backend.asarray(bad)
    try:
        train_step(model, optimizer, [(bad[:, :-1], bad[:, 1:])], 1e-2, 1.0)
    except IndexError as error:
        messages.append(str(error))
after = {k: backend.to_host(v) for k, v in model.state_dict().items()}
assert all(np.array_equal(before[k], after[k]) for k in before), "the update ran"
assert cupy.wrapped["take"] > 0  # the bad ids were used (wrapped around) before their checks were read
print("\n".join(messages))
'''
    messages = run_python(code).stdout.strip().splitlines()
    assert len(messages) == 2, messages
    assert "token id 70 is out of range for vocab_size=64" in messages[0], messages
    assert "target id 70 is out of range for 64 classes" in messages[1], messages


def test_queued_steps_wait_for_nothing_until_read_and_a_bad_one_skips_every_update_from_there() -> None:
    """``queue_train_step`` (what ``train``'s loop runs) reads nothing from the device: float32 and bfloat16
    steps decide on the GPU (a bad step skips its own update, and every later one until the read) and
    ``read_steps`` reads many steps in one transfer. A bad token id in the second of four queued steps: the
    read raises its IndexError, the weights are those after step 1, and AdamW's step counts are put back."""
    code = r'''
import json, numpy as np, cupy, tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.amp import MixedPrecision
from tinyllm.train import TrainConfig, configure_optimizer, queue_train_step, read_steps
cupy.out_of_range = "wrap"  # as on a GPU
backend = tl.set_backend("cupy", seed=0)
ids = np.random.default_rng(0).integers(0, 64, (2, 9))
def batch(bad=False):
    a = ids.copy()
    if bad:
        a[0, 2] = 99
    a = backend.asarray(a)
    return [(a[:, :-1], a[:, 1:])]
reads = {}
for dtype in ("float32", "bfloat16"):
    model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, max_seq_len=16))
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
    amp = MixedPrecision(model, dtype) if dtype != "float32" else None
    cupy.reset_counts()
    steps = []
    for _ in range(3):
        steps.append(queue_train_step(model, optimizer, batch(), 1e-2, 1.0, amp=amp, after=steps[-1] if steps else None))
    queued = dict(cupy.transfers)
    results = read_steps(steps)
    reads[dtype] = {"queued": queued, "read": dict(cupy.transfers), "finite": all(np.isfinite(r).all() for r in results)}
model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, max_seq_len=16))
optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
first = queue_train_step(model, optimizer, batch(), 1e-2, 1.0)
read_steps([first])
after_one = {k: backend.to_host(v).copy() for k, v in model.state_dict().items()}
counts = optimizer.counters()
steps = [queue_train_step(model, optimizer, batch(bad=True), 1e-2, 1.0)]
for _ in range(2):
    steps.append(queue_train_step(model, optimizer, batch(), 1e-2, 1.0, after=steps[-1]))
try:
    read_steps(steps)
    message, which = None, None
except IndexError as error:
    message, which = str(error), steps.index(error.queued_step)
same = all(np.array_equal(after_one[k], backend.to_host(v)) for k, v in model.state_dict().items())
print(json.dumps({"reads": reads, "message": message, "which": which, "same": same,
                  "counts_back": optimizer.counters() == counts}))
'''
    out = json.loads(run_python(code, kernels=True, timeout=600).stdout)  # with the kernels, as on a GPU
    for dtype, row in out["reads"].items():
        assert "to_host" not in row["queued"] and "sync" not in row["queued"], (dtype, row)  # three steps: no read
        assert row["read"].get("to_host") == 1 and "sync" not in row["read"], (dtype, row)  # then one for all three
        assert row["finite"], row
    assert "token id 99 is out of range for vocab_size=64" in out["message"] and out["which"] == 0, out
    assert out["same"], "an update ran after the bad step"
    assert out["counts_back"], "AdamW's step counts were not put back"


def test_the_training_loop_reads_the_device_only_to_log_and_evaluate(tmp_path) -> None:
    """``train`` on the simulated GPU, 6 steps, logging every 3, evaluating at 0 and 6 (2 batches each):
    the loop's reads are one per logging point and one per evaluation (its losses, accuracies and token-id
    checks together), nothing per step or per batch; checkpoints copy the weights to the host, nothing else."""
    code = r'''
import collections, json, sys, traceback
from pathlib import Path
sys.path.insert(0, "tests")
import cupy, tinyllm as tl
from conftest import small_token_dataset
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, train
out = Path(sys.argv[1])
data = small_token_dataset(out, 20_000, 300)
tl.set_backend("cupy", seed=0)
model = Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=1, n_heads=2, max_seq_len=16))
''' + COUNT_READS + r'''
train(model, data, TrainConfig(batch_size=2, block_size=16, max_steps=6, log_interval=3, eval_interval=6,
                               eval_iters=2, lr=1e-3, warmup_steps=1, out_dir=str(out / "run"), progress=False))
print(json.dumps(dict(where)))
'''
    where = json.loads(run_python(code, str(tmp_path), timeout=600, kernels=True).stdout.strip().splitlines()[-1])
    reads = {place: n for place, n in where.items() if not place.startswith(("checkpoint", "nn/module"))}
    assert reads == {"train.py:_read_back": 4}, where  # steps 3 and 6; the evaluations at 0 and 6


def test_a_16_bit_step_launches_as_many_kernels_per_layer_as_a_float32_step() -> None:
    """scripts/count_launches.py on the simulated CuPy, its kernels run on the CPU: the kernel launches of one
    training step. A float16 step once launched 1,214 kernels where float32 launched 688 (the gpu preset's
    6 layers): RoPE and the softmax ran their array code in 16-bit, and mixed precision's bookkeeping
    made a few launches per parameter; bfloat16 ran all of its activations' ops as array code (141 launches a
    layer against 50). Now a layer costs the same in all three dtypes, and a 16-bit step adds a few launches
    per step whatever the model's size (the logits' casts around the float32 loss, the loss scale, the
    bookkeeping kernels); clipping and AdamW launch per step, not per parameter."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "count_launches.py"), "--layers", "1,3", "--dim", "32",
         "--heads", "4", "--vocab", "64", "--context", "16", "--batch", "2", "--dtypes", "float32,float16,bfloat16"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {(r["dtype"], r["n_layers"]): r for r in map(json.loads, result.stdout.splitlines())}
    dtypes = ("float32", "float16", "bfloat16")
    per_layer = {dtype: (rows[dtype, 3]["launches"] - rows[dtype, 1]["launches"]) / 2 for dtype in dtypes}
    assert per_layer["float16"] == per_layer["bfloat16"] == per_layer["float32"], (per_layer, rows)
    for half in ("float16", "bfloat16"):
        assert 0 < rows[half, 1]["launches"] - rows["float32", 1]["launches"] <= 10, rows
    assert all(row["syncs"] == 1 for row in rows.values()), rows  # the step's one read, in every dtype
    for row in rows.values():  # nothing left that launches once per parameter
        assert all(count < row["parameters"] for name, count in row["top"].items() if name != "matmul"), row


def test_the_examples_train_resume_and_generate_on_the_simulated_gpu(tmp_path) -> None:
    text = tmp_path / "text.txt"
    text.write_text(shakespeare_text(60_000), encoding="utf-8")
    out = tmp_path / "run"
    common = ["--preset", "tiny", "--data", str(text), "--out-dir", str(out), "--no-progress", "--eval-interval", "5"]

    def example(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, env=simulated_env(),
                                cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        return result.stdout

    train = str(REPO_ROOT / "examples" / "train_shakespeare.py")
    first = example(train, *common, "--max-steps", "6", "--sample-tokens", "0")
    assert "simulated GPU" in first and "step 6" in first
    resumed = example(train, *common, "--resume", "--max-steps", "10", "--sample-tokens", "0")
    assert "step 10" in resumed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("kind") == "eval"][-1] == 10
    generated = example(str(REPO_ROOT / "examples" / "generate.py"), "--model", str(out / "best"), "--prompt", "ROMEO:",
                        "--max-new-tokens", "8", "--temperature", "0")
    assert generated.startswith("ROMEO:")
    quantized = example(str(REPO_ROOT / "examples" / "generate.py"), "--model", str(out / "best"), "--prompt", "ROMEO:",
                        "--max-new-tokens", "8", "--temperature", "0", "--quantize", "int8")
    assert quantized.startswith("ROMEO:")


# The files the GPU check runs first (scripts/gpu_check.sh, FAST), plus batched generation and LoRA.
SUITE = ["test_autograd_core.py", "test_fused.py", "test_float32_everywhere.py", "test_resume_exact.py", "test_model.py",
         "test_nn.py", "test_optim.py", "test_sampling.py", "test_checkpoint.py", "test_amp.py",
         "test_batch_generation.py", "test_lora.py"]
NOT_SIMULATED: list[str] = []  # tests that only a real GPU can run (none at present)


def test_a_bfloat16_step_stays_in_bfloat16() -> None:
    """Every Function of a bfloat16 forward and backward hands back bfloat16 (the loss excepted: float32 by
    design). NumPy has no "weak" Python scalars for ml_dtypes' bfloat16, so ``bf16_array * 0.5`` is float32
    there: attention's scale and SwiGLU's 0.5 silently turned the rest of a bfloat16 model into float32
    (found here, not yet on a GPU). Those ops now multiply by scalars of the array's dtype."""
    code = r'''
import numpy as np, tinyllm as tl
from tinyllm.autograd.function import Function
from tinyllm.amp import MixedPrecision
from tinyllm.models import ModelConfig, Transformer
backend = tl.set_backend("cupy", seed=0)
model = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16, dropout=0.1))
amp = MixedPrecision(model, "bfloat16")
wrong = []
call = Function.__call__
def checked_call(self, *inputs):
    out = call(self, *inputs)
    name, dtypes = type(self).__name__, [getattr(getattr(i, "data", i), "dtype", None) for i in inputs]
    if name != "CrossEntropy" and out.dtype.name != "bfloat16":
        wrong.append(f"{name} forward gave {out.dtype.name}")
    backward = self.backward
    def checked_backward(*grads):
        results = backward(*grads)
        for dtype, g in zip(dtypes, results if isinstance(results, tuple) else (results,)):
            if g is not None and dtype is not None and g.dtype != dtype:
                wrong.append(f"{name} backward gave {g.dtype.name} for a {dtype.name} input")
        return results
    self.backward = checked_backward
    return out
Function.__call__ = checked_call
ids = backend.asarray(np.random.default_rng(0).integers(0, 64, (2, 9)))
_, loss = amp.forward_model()(ids[:, :-1], ids[:, 1:])
loss.backward()
assert not wrong, wrong
assert {p.grad.dtype.name for p in amp.shadow.parameters()} == {"bfloat16"}
print("ok")
'''
    assert run_python(code).stdout.strip() == "ok"


def test_the_gpu_checks_first_test_files_pass_on_the_simulated_gpu() -> None:
    """What scripts/gpu_check.sh runs first on a GPU passes here first: a host/device mix-up in the library
    or in a test fails on the CPU, not in a GPU session's few minutes."""
    args = [f"tests/{name}" for name in SUITE] + [a for test in NOT_SIMULATED for a in ("--deselect", test)]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                            capture_output=True, text=True, timeout=600, env=simulated_env(), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_cuda_kernel_agrees_with_numpy_when_run_on_the_cpu() -> None:
    """tests/test_cuda_kernels.py, the GPU's agreement tests, with the kernels' C run on the CPU: the simulated
    CuPy compiles each ElementwiseKernel, ReductionKernel and RawKernel with g++ (tests/simulated_cupy/cupy/
    _cuda_on_cpu.py). A wrong index, a missed row, a kernel launched with its arguments in the wrong order, a
    deadlocked barrier fails here, in CI, before a GPU session spends its minutes on it. (Run this way it found
    a GPU test that wrote to a 1-D array with two indices, and a test whose tolerance measured AdamW's
    amplification of rounding rather than the kernels.)"""
    env = simulated_env(kernels=True)
    command = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "tests/test_cuda_kernels.py"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    passed = [line for line in lines if line.startswith("PASSED")]
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert passed, result.stdout[-3000:]
    assert all("ml_dtypes" in line for line in skipped), skipped  # only bfloat16, where ml_dtypes is missing
