"""The UI's error edge: a typed job error becomes a gr.Error (a toast, an AppError over the API) here, and only
here. Handlers raise the core's errors like any other code."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr

from core.errors import JobError, SpecError


def describe(error: JobError) -> str:
    """One line per bad field for a SpecError, else the error's own `field: message`."""
    if isinstance(error, SpecError) and len(error.errors) > 1:
        return "; ".join(f"{item['field']}: {item['message']}" if item.get("field") else item["message"]
                         for item in error.errors)
    return str(error)


def user_error(error: JobError) -> gr.Error:
    return gr.Error(describe(error), title=error.stage.capitalize() if error.stage else "Error",
                    print_exception=False)


def surface(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an event handler (plain or generator) so a JobError reaches the page as a gr.Error."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except JobError as error:
                raise user_error(error) from None
        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobError as error:
            raise user_error(error) from None
    return call
