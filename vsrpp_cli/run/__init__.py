"""A run of `vsrpp upscale`, from request to output: the conductor (pipeline.py), its first steps
and plan (plan.py, sizing.py), one pass for pipes (one_pass.py); workers (workers.py starts them,
worker.py is one: reading.py, windows.py, engine.py, segments.py), the writer (writer.py) and how
they meet (coordination.py, launch.py); the run's folder (folder.py) and output (outputs.py);
threads (threads.py) and failpoints (failpoints.py). Several inputs: jobs.py."""
