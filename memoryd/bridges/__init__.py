"""Outside services behind small interfaces, each with a local default."""
