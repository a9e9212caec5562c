"""The wheels the GPU check needs on a CUDA machine whose Python already has torch (`make gpu-wheels`).

    .venv/bin/python tools/gpu_wheels.py OUT [--venv .venv-trainer] [--max-mb 60]

Such a machine has torch (with CUDA), accelerate, transformers, peft, safetensors, huggingface_hub and pillow, and
their own requirements, but not diffusers, SimpleTuner, the quantization libraries or pydantic. This writes into OUT
one wheel for each distribution in WHEELS, the version installed in the trainer env, and prints their total size
(it fails above --max-mb). On the CUDA machine:

    pip install --no-index --no-deps --target /tmp/gpu-site OUT/*.whl
    PYTHONPATH=/tmp/gpu-site python3 bench/gpu_check.py --out /tmp/gpu-check

No network: each wheel is packed from the installed files that the distribution's RECORD lists (its code, data and
dist-info; no compiled bytecode, no scripts outside site-packages), as `pip wheel` would have built it. The tags are
the ones the distribution was installed with (its WHEEL file), so a compiled one (pydantic-core, torchao) fits
CPython 3.12 on x86-64 Linux, as the trainer env does. Runs with any Python 3.12 (the standard library only).

WHEELS is what the check imports beyond such a machine: SimpleTuner's modules that a training imports (most of its
declared requirements serve other model families, audio, video or its web UI, and are imported only there) and the
project's own core (pydantic). The test tests/test_gpu_check.py builds the folder and imports SimpleTuner's trainer
and the core from it next to those packages alone.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MB = 60.0
MACHINE_HAS = ("torch", "accelerate", "transformers", "peft", "safetensors", "huggingface-hub", "pillow",
               "torchvision", "torchaudio", "numpy", "scipy", "pandas", "requests", "pyyaml", "protobuf", "einops",
               "xxhash", "imageio", "lazy-loader", "httpx")
"""What the CUDA machine's Python is expected to have (with their own requirements): a PyTorch machine's usual
packages. The test imports the trainer with these and the wheels alone."""
WHEELS = (
    # the trainer: SimpleTuner imports every model family's module at start (audio and lyrics ones too, hence
    # librosa and spacy), wandb and its telemetry, its web API's fastapi, and boto3 for its S3 backend
    "simpletuner", "diffusers", "trainingsample", "skrample", "torch-optimi", "lycoris-lora", "loguru", "toml",
    "atomicwrites", "wandb", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto",
    "opentelemetry-semantic-conventions", "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-common", "opentelemetry-exporter-otlp-common",
    "opentelemetry-exporter-http-transport", "fastapi", "starlette", "ftfy", "wcwidth", "py3langid", "pypinyin",
    "hangul-romanize", "num2words", "spacy", "thinc", "catalogue", "confection", "wasabi", "blis", "cymem",
    "preshed", "murmurhash", "srsly", "weasel", "librosa", "soxr", "boto3", "botocore", "s3transfer", "jmespath",
    "beautifulsoup4", "soupsieve",
    # the quantizations the recipes use (bitsandbytes, for nf4-bnb, is 60 MB: only where the machine has it)
    "optimum-quanto", "torchao",
    # the core (python -m core run): the job declaration
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
)
"""The distributions packed, by name as installed."""
LEFT_OUT = {"wandb": ("wandb/bin/",), "spacy": ("spacy/tests/",),
            "simpletuner": ("simpletuner/templates/", "simpletuner/static/", "simpletuner/examples/"),
            "py3langid": ("py3langid/data/",)}
"""Files not packed: wandb's service programs (50 MB), started only by a run that reports to wandb (the check's
runs report to none); spacy's own tests; SimpleTuner's web UI pages and example configs (a training reads neither);
py3langid's language model (4.5 MB), loaded only when the audio family ACE-Step segments a lyric.
botocore keeps only the S3 service's data (BOTOCORE_DATA_KEPT)."""
BOTOCORE_DATA_KEPT = re.compile(r"^botocore/data/([^/]+\.json(\.gz)?|s3/.*|sts/.*)$")
"""botocore's data files kept: its shared tables and the S3 and STS services (the others' are 27 MB)."""
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
"""Every member's timestamp: the same installed files make the same wheel."""


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    dist_info: Path

    @property
    def site(self) -> Path:
        return self.dist_info.parent

    def tag(self) -> str:
        """The wheel's tags as installed (its WHEEL file's `Tag:` lines) in a file name's compressed form, e.g.
        py2.py3-none-any."""
        text = (self.dist_info / "WHEEL").read_text() if (self.dist_info / "WHEEL").exists() else ""
        tags = [tag.split("-") for tag in re.findall(r"^Tag:\s*(\S+)", text, re.MULTILINE)] or [["py3", "none", "any"]]
        return "-".join(".".join(dict.fromkeys(tag[part] for tag in tags)) for part in range(3))

    def files(self) -> list[str]:
        """The RECORD's paths inside site-packages, without bytecode and the installer's own notes."""
        rows = csv.reader(io.StringIO((self.dist_info / "RECORD").read_text()))
        info = self.dist_info.name
        skipped = {f"{info}/RECORD", f"{info}/INSTALLER", f"{info}/REQUESTED", f"{info}/direct_url.json",
                   f"{info}/uv_cache.json", f"{info}/uv_build.json"}
        return sorted({row[0] for row in rows if row and not row[0].startswith(("..", "/"))
                       and "__pycache__/" not in row[0] and not row[0].endswith(".pyc") and row[0] not in skipped
                       and not row[0].startswith(LEFT_OUT.get(normalized(self.name), ("\0",)))
                       and (not row[0].startswith("botocore/data/") or BOTOCORE_DATA_KEPT.match(row[0]))})


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(site: Path) -> dict[str, Installed]:
    """The distributions of a site-packages folder, by normalized name."""
    found: dict[str, Installed] = {}
    for info in sorted(site.glob("*.dist-info")):
        metadata = (info / "METADATA").read_text(errors="replace") if (info / "METADATA").exists() else ""
        name = re.search(r"^Name:\s*(.+)$", metadata, re.MULTILINE)
        version = re.search(r"^Version:\s*(.+)$", metadata, re.MULTILINE)
        if name and version and (info / "RECORD").exists():
            found[normalized(name.group(1).strip())] = Installed(name.group(1).strip(), version.group(1).strip(), info)
    return found


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise SystemExit(f"--venv {venv}: no lib/python3*/site-packages (run `make trainer-env`)")
    return found[-1]


def pack(dist: Installed, out: Path) -> Path:
    """One wheel of an installed distribution, with a fresh RECORD (sha256 of each file, as the wheel spec asks)."""
    stem = re.sub(r"[^\w\d.]+", "_", dist.name)
    wheel = out / f"{stem}-{dist.version}-{dist.tag()}.whl"
    record: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for relative in dist.files():
            path = dist.site / relative
            if not path.is_file():
                continue
            data = _without_debug_info(path) if path.name.endswith(".so") or ".so." in path.name else path.read_bytes()
            member = zipfile.ZipInfo(relative, ZIP_DATE)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append((relative, f"sha256={digest}", str(len(data))))
        record.append((f"{dist.dist_info.name}/RECORD", "", ""))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(record)
        archive.writestr(zipfile.ZipInfo(f"{dist.dist_info.name}/RECORD", ZIP_DATE), text.getvalue())
    return wheel


def _without_debug_info(path: Path) -> bytes:
    """A compiled module without its debug sections and local symbols (`strip --strip-unneeded`, as Linux
    distributions ship them: the exported symbols and the code stay); spacy's modules are 5-10 times bigger with
    them. The file as installed where `strip` is missing or refuses it."""
    strip = shutil.which("strip")
    if strip is None:
        return path.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        done = subprocess.run([strip, "--strip-unneeded", str(copy)], capture_output=True, check=False)
        return copy.read_bytes() if done.returncode == 0 else path.read_bytes()


def build(out: Path, *, venv: Path, names: tuple[str, ...] = WHEELS) -> list[Path]:
    """Pack `names` from the venv into `out` (emptied of earlier wheels first)."""
    found = installed(site_packages(venv))
    missing = [name for name in names if normalized(name) not in found]
    if missing:
        raise SystemExit(f"not installed in {venv}: {', '.join(missing)} (run `make trainer-env`)")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    return [pack(found[normalized(name)], out) for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder of wheels (its earlier wheels are removed)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-trainer", help="the env the wheels are packed from")
    parser.add_argument("--max-mb", type=float, default=MAX_MB, help="fail when the wheels together are bigger")
    args = parser.parse_args(argv)
    wheels = build(args.out.absolute(), venv=args.venv.absolute())
    total = sum(wheel.stat().st_size for wheel in wheels)
    for wheel in sorted(wheels, key=lambda path: -path.stat().st_size):
        print(f"{wheel.stat().st_size / 1e6:7.2f} MB  {wheel.name}")
    print(f"{total / 1e6:7.2f} MB  total, {len(wheels)} wheels in {args.out} (limit {args.max_mb:g} MB)")
    if total > args.max_mb * 1e6:
        print(f"gpu_wheels: the wheels are {total / 1e6:.1f} MB, over --max-mb {args.max_mb:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
