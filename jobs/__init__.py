"""RQ jobs: transcriptions streamed to the inference servers, and webhook deliveries.

`python -m jobs.worker` runs them. The API only names the job functions (dotted paths), so it never
imports this package's gRPC or engine dependencies.
"""
