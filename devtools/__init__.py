"""Developer and operator tooling that never ships to AWS: the local stack (`make dev`), its moto server
patches, the operator CLI and the benchmarks. `chalice package` takes only app.py and chalicelib/."""
