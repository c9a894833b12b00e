"""Fault tests: each injects its fault for real (processes killed, files corrupted, Redis stopped).

One module per fault family. The fast subset runs in ``make test``; longer soak runs are
marked ``slow`` and run by ``make faults``. docs/runbook.md ("Failure modes, proven")
lists each fault, what the service does, and the test here that proves it.
"""
