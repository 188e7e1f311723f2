"""Captions: reading, tag operations with previews, journaled atomic writes and undo (no torch)."""
