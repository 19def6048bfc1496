"""Storage backends, one module each; `expstore.store.registry` imports them lazily by scheme."""
