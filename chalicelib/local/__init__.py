"""The local stack (`make dev`): embedded moto server, API, worker loops and scheduler."""
