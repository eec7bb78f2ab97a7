"""Business rules of the API, kept out of the views: plans, uploads, transcriptions, idempotency."""
