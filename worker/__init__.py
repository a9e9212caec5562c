"""The RunPod serverless face: `python -m worker` runs runpod's worker loop with `worker.handler.handler`.

handler.py  one job: parse, run the core pipeline in a thread, report progress, shape the output, clean up
progress.py the job's state shown in RunPod's status while it runs (throttled progress_update)
output.py   the API output and the one error shape, {"error": {code, stage, message, field}}
"""
