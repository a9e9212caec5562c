"""The handler file RunPod's Hub asks for: it starts the same worker as `python -m worker`, nothing else.

The image itself starts the worker through start.sh (its ENTRYPOINT); this file is what the Hub's checks look for, and
it also lets `python .runpod/handler.py --rp_serve_api` (or `--test_input '{...}'`) run from any folder. The job logic
lives in worker/ only; docs/runpod-hub.md says how the Hub files fit together.
"""

import sys
from pathlib import Path

# Run as a script, Python puts .runpod/ first on sys.path; the project's packages sit one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.__main__ import main  # after the path above

if __name__ == "__main__":
    main()
