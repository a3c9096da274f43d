"""Many inputs, many processes, many machines: `engine` runs independent tasks serially, in local
processes or on Ray; `replay_batch` is `tracker3d batch` (replay, and optionally eval, of many
recordings or detection folders into an output tree, resumable)."""
