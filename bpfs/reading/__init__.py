"""Reading S3 objects: per-file read-ahead over a shared cache of byte ranges."""
