"""The format layer: pure bytes <-> objects (tree skeletons, the checkpoint container, JSON rows).

It imports nothing of expstore but `errors`, and reads stored bytes through the small `Readable`
protocol that every `Store` meets by shape."""
