"""bpfs: a Basepair account as a FUSE filesystem."""

__version__ = "0.1.0"
