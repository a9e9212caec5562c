"""Benchmark: stage N synthetic video clips (probe + copy + caption), beside ffprobe on the same files when present.

    .venv/bin/python bench/bench_clips.py                        # 200 clips of 64x64, 9 to 33 frames
    .venv/bin/python bench/bench_clips.py --clips 50 --size 256 --frames 81

Writes the clips once (PyAV, H.264 in .mp4), then, in a child process (its own peak RSS), `stage_dataset` on the
folder: every clip probed (container metadata, packets counted without decoding, the first frame decoded) and
copied into the job's clips folder with its caption. Prints clips per second and the child's peak RSS. With
Debian's ffprobe on PATH it also times `ffprobe -count_packets` on each clip (one process per clip, as
SimpleTuner's discovery runs it); without it, it says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.clips import write_clip  # noqa: E402

STAGE = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from core.dataset import stage_dataset
from core.settings import Settings
from core.spec import DatasetSpec
started = time.perf_counter()
manifest = stage_dataset(DatasetSpec(path={source!r}), Path({dest!r}), settings=Settings.from_env())
took = time.perf_counter() - started
print(json.dumps({{"clips": len(manifest.clips), "skipped": len(manifest.skipped), "seconds": took,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_clips(folder: Path, *, count: int, size: int, frames: int) -> int:
    total = 0
    for index in range(count):
        length = 9 + (index * 8) % max(frames - 8, 1)
        write_clip(folder / f"clip{index:04d}.mp4", frames=length, size=size, caption=f"clip {index}")
        total += (folder / f"clip{index:04d}.mp4").stat().st_size
    return total


def stage(source: Path, dest: Path) -> dict:
    code = STAGE.format(root=str(ROOT), source=str(source), dest=str(dest))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ffprobe(source: Path) -> float | None:
    tool = shutil.which("ffprobe")
    if tool is None:
        return None
    started = time.perf_counter()
    for clip in sorted(source.glob("*.mp4")):
        subprocess.run([tool, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                        "stream=width,height,nb_read_packets,avg_frame_rate,duration", "-of", "json", str(clip)],
                       capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=33, help="the longest clip (they range from 9 up)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-clips-") as tmp:
        source = Path(tmp) / "clips"
        started = time.perf_counter()
        size = make_clips(source, count=args.clips, size=args.size, frames=args.frames)
        print(f"{args.clips} clips of {args.size}x{args.size}, 9-{args.frames} frames, {size / 2**20:.1f} MB "
              f"written in {time.perf_counter() - started:.1f} s")
        runs = [stage(source, Path(tmp) / f"job{run}") for run in range(args.runs)]
        best = min(runs, key=lambda run: run["seconds"])
        assert best["clips"] == args.clips, best
        print(f"stage_dataset: {args.clips / best['seconds']:.0f} clips/s (best of {args.runs}: "
              f"{best['seconds']:.2f} s), peak RSS {max(run['peak_rss_mb'] for run in runs):.0f} MB")
        probed = ffprobe(source)
        if probed is None:
            print("ffprobe: not installed on this machine (Debian's ffmpeg package provides it): no comparison")
        else:
            print(f"ffprobe -count_packets, one process per clip: {args.clips / probed:.0f} clips/s ({probed:.2f} s)")
    writer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this process's peak RSS (writing the clips): {writer_mb:.0f} MB")


if __name__ == "__main__":
    main()
