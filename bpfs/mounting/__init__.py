"""The FUSE front end: the thin mfusepy adapter, the assembly of the pieces, the daemon, mount points."""
