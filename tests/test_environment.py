"""Reports' provenance: the environment record (packages, CPU, numerics) and the dataset identity."""

from __future__ import annotations

import shutil

import pytest
import torch

from teso.data.identity import dataset_identity
from teso.errors import TesoError
from teso.utils.environment import cpu_record, environment_record, machine_line, package_versions

_CPU_BLOCK = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw
"""
_AMD = "\n".join(_CPU_BLOCK.format(n=n) for n in range(2))  # /proc/cpuinfo of two logical CPUs


def test_cpu_record_reads_vendor_model_and_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(_AMD)
    rec = cpu_record(info)
    assert rec["vendor"] == "AuthenticAMD" and rec["model"] == "AMD EPYC 9R14 96-Core Processor"
    assert rec["family_model_stepping"] == "25/17/1" and rec["logical_cpus"] == 2
    assert rec["flags"] == {
        "avx2": True,
        "fma": True,
        "avx512f": True,
        "avx512_bf16": False,
        "amx_tile": False,
    }
    missing = cpu_record(tmp_path / "nothing")
    assert missing["vendor"] is None and missing["flags"] is None


def test_environment_record_names_the_software_and_the_numerics():
    env = environment_record()
    assert env["packages"]["torch"] == torch.__version__
    assert package_versions(("surely-not-installed-pkg",)) == {"surely-not-installed-pkg": None}
    assert env["numerics"]["threads"] == torch.get_num_threads()
    line = machine_line(env)
    assert f"torch {torch.__version__}" in line and ("not pinned" in line or "pinned numerics" in line)


def test_synthavs_identity_hashes_content_and_ignores_run_folders(tmp_path):
    from teso.synthavs.generator import generate

    root = tmp_path / "a"
    generate(root, clips=4, seed=0, subsets=("v1m",), progress=False)
    first = dataset_identity(root)
    assert first["kind"] == "synthavs" and first["method"] == "content" and first["files"] > 10
    (root / "foundations" / "x").mkdir(parents=True)
    (root / "foundations" / "x" / "w.bin").write_bytes(b"run output")
    assert dataset_identity(root) == first  # what runs add is not the dataset
    shutil.copytree(root, tmp_path / "b")
    assert dataset_identity(tmp_path / "b")["sha256"] == first["sha256"]  # the bytes, not the place
    wav = next(root.rglob("*.wav"))
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1  # one bit, same size: only a content hash sees it
    wav.write_bytes(bytes(data))
    assert dataset_identity(root)["sha256"] != first["sha256"]
    assert dataset_identity(root, content=False)["method"] == "csv+listing"


def test_avsbench_identity_is_listing_and_csv_and_a_missing_root_is_named(tmp_path):
    root = tmp_path / "avs"
    (root / "v2").mkdir(parents=True)
    (root / "metadata.csv").write_text("vid,uid,s_min,s_sec,a_obj,split,label\n")
    (root / "v2" / "0.png").write_bytes(b"x" * 10)
    first = dataset_identity(root)
    assert (
        first["method"] == "csv+listing"
        and first["files"] == 2
        and first["bytes"] == 10 + len("vid,uid,s_min,s_sec,a_obj,split,label\n")
    )
    (root / "v2" / "0.png").write_bytes(b"y" * 10)  # same size: not seen, by design (instant)
    assert dataset_identity(root) == first
    (root / "metadata.csv").write_text("vid,uid,s_min,s_sec,a_obj,split,label\nx\n")
    assert dataset_identity(root)["sha256"] != first["sha256"]
    with pytest.raises(TesoError, match="nowhere: dataset root not found"):
        dataset_identity(tmp_path / "nowhere")
