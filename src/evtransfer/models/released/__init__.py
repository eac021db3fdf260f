"""The authors' released checkpoints: one module per codebase reads its official file layout,
maps its keys onto our networks and loads them strictly (nothing here downloads)."""
