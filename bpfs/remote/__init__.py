"""The remote side: the config file, the Basepair REST API (both dialects), its records, and S3."""
