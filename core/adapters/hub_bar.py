"""A progress bar for huggingface_hub's single-file downloads (`hf_hub_download(tqdm_class=...)`) that counts bytes
instead of drawing, and stops the download at its next chunk once the job is cancelled or out of time.

huggingface_hub offers no cancel of its own: its progress bar's `update`, called per chunk written, is the one place
a running file download can be stopped from. The bytes are counted for the caller's thread to report (events belong
to the job's thread; downloads run on pool threads).

    bar = ByteBar(cancel, doing="downloading user/set", stage="dataset")
    hf_hub_download(..., tqdm_class=bar.bar_class())
    bar.done                                   # bytes received so far, by every file
"""

from __future__ import annotations

import threading
from typing import Any

from core.adapters.hub import CancelFlag, stop_error


class SilentBar:
    """The part of tqdm that huggingface_hub touches, none of it drawing: subclasses count in `update`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = int(kwargs.get("initial") or 0)
        self.total = kwargs.get("total")
        self.format_dict: dict[str, Any] = {"rate": None}

    def update(self, n: float | None = 1) -> None:
        self.n += int(n or 0)

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        return None

    set_description = set_description_str = set_postfix_str = close = refresh

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class ByteBar:
    def __init__(self, cancel: CancelFlag | None, *, doing: str, stage: str):
        self.cancel, self.doing, self.stage = cancel, doing, stage
        self.done = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise the job's stop error (cancelled / timeout) when `cancel` is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise stop_error(self.cancel, doing=f"while {self.doing}", stage=self.stage)

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count

    def bar_class(self) -> type:
        owner = self

        class Bar(SilentBar):
            """hf_hub_download's bar: stops at a cancel, adds its bytes to the owner's."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.counts = kwargs.get("unit") == "B"
                owner.check()

            def update(self, n: float | None = 1) -> None:
                owner.check()
                super().update(n)
                if self.counts:
                    owner.add(int(n or 0))

        return Bar
