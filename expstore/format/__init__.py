"""The format layer: pure bytes <-> objects (tree skeletons, the checkpoint container, JSON rows).

It imports nothing of expstore but `errors`, and reads and writes stored bytes through the small
`Readable` / `Writable` protocols of `source`, which every `Store` meets by shape."""
