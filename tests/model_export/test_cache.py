"""The cache: atomic installs, concurrent exports, refusals by the loader, CLI failure lines."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from styleserve_export.artifact import ArtifactError, file_sha256
from styleserve_export.cli import main
from styleserve_export.export import export
from styleserve_export.loader import load_backbone, read_manifest
from styleserve_export.sources import resolve_source


def _cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom styleserve_export.cli import main\n"
    code += "sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_second_run_does_nothing_and_force_rebuilds(tiny_pth, tmp_path, capsys):
    cache = tmp_path / "cache"
    source = f"file:{tiny_pth}"
    assert main(["--source", source, "--cache-dir", str(cache)]) == 0
    manifest = read_manifest("torchvision-vgg16", cache)
    assert main(["--source", source, "--cache-dir", str(cache)]) == 0
    assert read_manifest("torchvision-vgg16", cache)["created"] == manifest["created"]
    assert main(["--source", source, "--cache-dir", str(cache), "--force"]) == 0
    first, second, third = capsys.readouterr().out.splitlines()
    assert first.startswith(f"source {source} -> backbone torchvision-vgg16: 13 layers")
    assert "nothing to do (--force rebuilds)" in second
    assert third.startswith("source ")
    assert _entries(cache) == ["export.lock", "torchvision-vgg16"]


def test_two_processes_at_once_leave_one_valid_artifact(tiny_pth, tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "styleserve_export.cli", "--source", f"file:{tiny_pth}"]
    command += ["--cache-dir", str(cache)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    # One built it; the other waited for the lock, then found it valid.
    assert sorted("nothing to do" in out for out in outputs) == [False, True]
    assert _entries(cache) == ["export.lock", "torchvision-vgg16"]
    load_backbone("torchvision-vgg16", cache_dir=cache, device="cpu")


def test_forced_exports_from_threads_serialise(tiny_safetensors, tmp_path):
    cache = tmp_path / "cache"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            export(resolve_source(f"file:{tiny_safetensors}"), cache, force=True)
        except BaseException as err:  # handed to the main thread's assertion
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _entries(cache) == ["export.lock", "keras-vgg16"]
    load_backbone(cache_dir=cache, device="cpu")


def test_missing_artifact_names_the_command(tmp_path):
    with pytest.raises(ArtifactError) as err:
        load_backbone("torchvision-vgg19", cache_dir=tmp_path)
    assert f"run `styleserve-export --source torchvision-vgg19 --cache-dir {tmp_path}`" in str(
        err.value
    )


def test_modified_weights_are_refused(tiny_safetensors, tmp_path):
    cache = tmp_path / "cache"
    export(resolve_source(f"file:{tiny_safetensors}"), cache)
    weights = cache / "keras-vgg16" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt or modified.*--force`"):
        load_backbone(cache_dir=cache, device="cpu")


def test_corrupt_file_with_a_matching_manifest_is_refused(tiny_safetensors, tmp_path):
    cache = tmp_path / "cache"
    export(resolve_source(f"file:{tiny_safetensors}"), cache)
    directory = cache / "keras-vgg16"
    (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["artifact"]["sha256"] = file_sha256(directory / "model.safetensors")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot load .*--force`"):
        load_backbone(cache_dir=cache, device="cpu")


def test_broken_manifest_is_refused_and_rebuilt(tiny_safetensors, tmp_path):
    cache = tmp_path / "cache"
    export(resolve_source(f"file:{tiny_safetensors}"), cache)
    (cache / "keras-vgg16" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        load_backbone(cache_dir=cache, device="cpu")
    result = export(resolve_source(f"file:{tiny_safetensors}"), cache)
    assert not result.skipped
    load_backbone(cache_dir=cache, device="cpu")


def test_full_disk_keeps_the_previous_artifact(tiny_pth, tmp_path):
    cache = tmp_path / "cache"
    export(resolve_source(f"file:{tiny_pth}"), cache)
    before = read_manifest("torchvision-vgg16", cache)
    # A file size limit below the artifact's size makes the write fail like a full disk.
    limit = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    limit += "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))"
    done = _cli("--source", f"file:{tiny_pth}", "--cache-dir", str(cache), "--force", prelude=limit)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "File too large" in line and "free disk space or choose another --cache-dir" in line
    assert read_manifest("torchvision-vgg16", cache) == before
    assert _entries(cache) == ["export.lock", "torchvision-vgg16"]


def test_unknown_source_is_one_line(tmp_path, capsys):
    assert main(["--source", "imagenet-vgg", "--cache-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert "unknown source 'imagenet-vgg': choose one of keras-vgg16" in line
    assert not tmp_path.joinpath("imagenet-vgg").exists()


def test_list_names_every_source_and_its_needs(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "keras-vgg16",
        "torchvision-vgg16",
        "torchvision-vgg19",
        "magenta-arbitrary",
        "file:PATH",
        "file:PATH.whl",
    ]
    assert "package index" in lines[0] and "download.pytorch.org" in lines[1]
