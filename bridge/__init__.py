"""bridge: local-first experiment tracking."""
__all__: list[str] = []
