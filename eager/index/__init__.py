"""Item codes: balanced hierarchical k-means, the item index, its meaning check and figure."""
