"""The filesystem: FUSE operations, volume API, LMDB metadata, segment store, caches."""
