"""CLI verbs: one module each (see insitu.cli)."""
