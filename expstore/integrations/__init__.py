"""Adapters that put expstore inside the frameworks users train with: one module per framework
(`lightning`, `dcp`, `transformers`), each importing its framework only when used."""
