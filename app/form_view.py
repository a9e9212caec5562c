"""The job form on the page: its components (spread over the tabs), and its field errors shown next to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.job_form import FIELDS, field_errors, spec_from_form
from core.errors import SpecError

ERROR_CLASS = "field-error"


@dataclass
class FormView:
    components: dict[str, Any]
    """Form field name (app/job_form.FIELDS) -> its component."""
    summary: gr.Markdown
    """Where all of the form's errors are listed together (the Config tab)."""
    _infos: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(FIELDS) - set(self.components)
        if missing:
            raise ValueError(f"the form lacks components for {sorted(missing)}")
        self._infos = {name: getattr(self.components[name], "info", None) for name in FIELDS}

    @property
    def inputs(self) -> dict[str, Any]:
        """For an event's inputs_kwargs: the handler gets every field as a keyword argument."""
        return {name: self.components[name] for name in FIELDS}

    @property
    def outputs(self) -> list[Any]:
        """Every field in FIELDS order (what a handler returning form values fills)."""
        return [self.components[name] for name in FIELDS]

    @property
    def error_outputs(self) -> list[Any]:
        return [*self.outputs, self.summary]

    def show_errors(self, **values: Any) -> list[Any]:
        """Each field's info line becomes its error (or goes back to its help text); the summary lists them all."""
        try:
            spec_from_form(values)
            errors: dict[str, list[str]] = {}
        except SpecError as error:
            errors = field_errors(error)
        return [*self.error_updates(errors), format_errors(errors)]

    def error_updates(self, errors: dict[str, list[str]]) -> list[Any]:
        return [gr.update(info="⚠ " + "; ".join(errors[name]), elem_classes=[ERROR_CLASS]) if name in errors
                else gr.update(info=self._infos[name], elem_classes=[]) for name in FIELDS]

    def validate_on(self, trigger: Any) -> Any:
        """Show the form's field errors when `trigger` fires; chain the real handler with .then()."""
        return trigger(self.show_errors, inputs_kwargs=self.inputs, outputs=self.error_outputs,
                       api_visibility="private", show_progress="hidden")


def format_errors(errors: dict[str, list[str]]) -> str:
    if not errors:
        return ""
    lines = [f"- **{name}**: {message}" for name, messages in errors.items() for message in messages]
    return "**The job is not valid yet:**\n" + "\n".join(lines)
