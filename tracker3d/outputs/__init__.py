"""What a run leaves behind: track files (files: .jsonl/.csv/.mcap writers and readers), an
overlay video of the 3D tracks projected into both views (overlay), a trajectory plot (plot)."""
from .files import Records, open_writer, read_csv, read_jsonl, read_mcap

__all__ = ["Records", "open_writer", "read_csv", "read_jsonl", "read_mcap"]
