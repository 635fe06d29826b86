"""The operator process: API client, settings, status helpers, progress endpoint, kopf configuration."""
