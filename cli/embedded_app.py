"""The API with the in-process training runner: what `safetune serve` runs when no broker is set.

`api` may not import `worker`, so the embedded composition of the two lives here; starting the runner
registers it with `safetune.queue`, which then hands it every committed job.
"""

from __future__ import annotations

from api.main import create_app
from worker import embedded

embedded.start()
app = create_app()
