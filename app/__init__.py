"""The Gradio face: build a job, curate a dataset, train with live progress, publish. `python -m app` starts it."""
